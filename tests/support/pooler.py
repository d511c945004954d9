"""PgBouncer in transaction mode in front of a test database, as Neon's `-pooler` endpoint runs it.

`running(url)` starts one on a free 127.0.0.1 port and yields its URL; `serving_url` routes the
services of a TEST_VIA_PGBOUNCER=1 session through it (migrations and direct SQL stay direct).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from tests.support import prerequisites, processes

_routes: dict[str, str] = {}


def serving_url(database_url: str) -> str:
    """The URL services should use for `database_url`: its pooler when one is routed, else itself."""
    return _routes.get(database_url, database_url)


@contextmanager
def routed(database_url: str) -> Iterator[str]:
    """Route services of `database_url` through a PgBouncer of their own until the block ends."""
    with running(database_url) as pooled:
        _routes[database_url] = pooled
        try:
            yield pooled
        finally:
            del _routes[database_url]


@contextmanager
def running(database_url: str, *, pool_size: int = 20) -> Iterator[str]:
    """PgBouncer (pool_mode=transaction, trust auth, `pool_size` server connections) on 127.0.0.1 in
    front of `database_url`; yields its URL."""
    pgbouncer = prerequisites.program("pgbouncer", "pgbouncer")
    target = make_url(database_url)
    host = str(target.query.get("host") or target.host or "127.0.0.1")
    user = target.username or "postgres"
    server = f"host={host} port={target.port or 5432} dbname={target.database} user={user}"
    if target.password:
        server += f" password={target.password}"
    port = processes.free_port()
    folder = Path(tempfile.mkdtemp(prefix="todo-api-pgbouncer-"))
    folder.chmod(0o755)  # readable by the unprivileged user pgbouncer switches to under root
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{target.database} = {server}\n\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 2000\n"
    )
    command = [pgbouncer, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root; use the embedded server's own user
        command[1:1] = ["-u", _unprivileged_user()]
    log_path = folder / "pgbouncer.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = target.set(drivername="postgresql+psycopg", host="127.0.0.1", port=port, password=None, query={})
    pooled = url.render_as_string(hide_password=False)
    try:
        probe = _answers(url.set(drivername="postgresql").render_as_string())
        output = partial(log_path.read_text, errors="replace")
        processes.wait_until_up(process, probe, name="pgbouncer", log=output, timeout=15)
        yield pooled
    finally:
        processes.stop(process)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _unprivileged_user() -> str:
    for name in ("embedded_postgres", "postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run pgbouncer as")


def _answers(url: str) -> Callable[[], bool]:
    """A probe for `processes.wait_until_up`: `SELECT 1` through the pooler at `url`."""

    def probe() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as connection:
                connection.execute("SELECT 1")
                return True
        except psycopg.OperationalError:
            return False

    return probe
