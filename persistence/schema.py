"""Alembic migrations: apply them, and tell whether the database is at the newest one.

A migration runs in one transaction under an advisory lock, so concurrent starts apply it once.
It never waits forever: connecting gives up after a timeout, the lock wait after
`lock_timeout_seconds`. A downgrade that would drop a table or column holding rows is rolled
back unless `discard_data` is given.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from persistence.database import Database
from persistence.errors import DatabaseUnavailable
from persistence.libpq import LIBPQ_DEFAULTS

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any constant shared by every instance; serialises concurrent `todo-api serve` start-ups.
MIGRATION_LOCK = 0x70D0A91
# The service's libpq defaults (a URL may override them), more patient: a migration's statements
# may rightly run long, yet a peer that vanished during one is still noticed.
CONNECTION_DEFAULTS = {
    **LIBPQ_DEFAULTS,
    "connect_timeout": "10",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "tcp_user_timeout": "60000",
}
# Rows here are rebuilt from others (task_tags from tasks.tags): dropping them loses nothing.
DERIVED_TABLES = frozenset({"task_tags"})
# Columns counted again from other rows by the migration that adds them (users.task_count, 0006).
DERIVED_COLUMNS = frozenset({"users.task_count"})

# table -> (rows, columns) of every table of ours.
Holdings = dict[str, tuple[int, frozenset[str]]]


class MigrationRefused(Exception):
    """The migration was not applied, and nothing was changed; the message is one line."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection  # migrations/env.py runs on it
    return config


def _engine(url: str) -> Engine:
    given = make_url(url).query
    defaults = {name: value for name, value in CONNECTION_DEFAULTS.items() if name not in given}
    return create_engine(url, poolclass=pool.NullPool, connect_args={"prepare_threshold": None, **defaults})


@cache
def head() -> str:
    """The newest revision in migrations/."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head", *, lock_timeout_seconds: int = 60, discard_data: bool = False) -> None:
    """Bring the schema to `revision`, upgrading or downgrading as needed; safe to run concurrently."""
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            now = MigrationContext.configure(connection).get_current_revision()
            if revision == "head" and now == head():
                return  # the common start-up: no lock, no Alembic environment
            _lock(connection, lock_timeout_seconds)
            config = _config(connection)
            if _is_downgrade(config, now, revision):
                held = _holdings(connection)
                command.downgrade(config, revision)
                lost = _lost(held, _holdings(connection, count=False))
                if lost and not discard_data:
                    raise MigrationRefused(
                        f"downgrading to {revision} would delete {lost}; nothing was changed "
                        f"(`todo-api migrate {revision} --yes` deletes it)"
                    )
            else:
                command.upgrade(config, revision)
    finally:
        engine.dispose()


def _lock(connection: Connection, timeout_seconds: int) -> None:
    """Take the migration lock for this transaction; every lock wait after it is bounded too."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_seconds)}s'"))
    try:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    except OperationalError as error:
        if not isinstance(error.orig, psycopg.errors.LockNotAvailable):
            raise
        raise MigrationRefused(
            f"another migration of this database held its lock for {timeout_seconds} s; "
            "retry when it is done (MIGRATION_LOCK_TIMEOUT_SECONDS sets the wait)"
        ) from None


def _is_downgrade(config: Config, now: str | None, revision: str) -> bool:
    if revision == "head" or now is None:
        return False
    if revision == "base":
        return True
    scripts = ScriptDirectory.from_config(config)
    target = scripts.get_revision(revision)
    below_now = {script.revision for script in scripts.iterate_revisions(now, "base")}
    return target is not None and target.revision in below_now and target.revision != now


def _holdings(connection: Connection, *, count: bool = True) -> Holdings:
    """Our tables, their columns and (when `count`) their rows, seen past row-level security."""
    tables = connection.execute(
        text(
            "SELECT c.relname, c.relforcerowsecurity, array_agg(a.attname::text) FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> 'alembic_version' "
            "GROUP BY c.relname, c.relforcerowsecurity"
        )
    ).all()
    holdings: Holdings = {}
    for table, forced, columns in tables:
        rows = 0
        if count:
            # Forced policies bind the owner too; lifted only inside this transaction.
            if forced:
                connection.execute(text(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY'))
            rows = connection.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0
            if forced:
                connection.execute(text(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY'))
        holdings[table] = (rows, frozenset(columns))
    return holdings


def _lost(before: Holdings, after: Holdings) -> str:
    """What going from `before` to `after` deletes, in words ("" when nothing)."""
    lost = []
    for table, (rows, columns) in sorted(before.items()):
        if not rows or table in DERIVED_TABLES:
            continue
        if table not in after:
            lost.append(f"table {table} ({rows} rows)")
        elif dropped := sorted(c for c in columns - after[table][1] if f"{table}.{c}" not in DERIVED_COLUMNS):
            lost.append(f"{', '.join(f'{table}.{column}' for column in dropped)} ({rows} rows)")
    return "; ".join(lost)


@cache
def known() -> frozenset[str]:
    """Every revision in migrations/."""
    return frozenset(script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions())


async def is_current(db: Database) -> bool:
    """Whether `db` answers and its schema is at the newest migration — or past it: a revision this
    release does not know was written by a newer one, whose migrations only expand (README, Upgrades),
    so this release keeps serving while the two run side by side."""
    try:
        rows = await db.run(None, "SELECT version_num FROM alembic_version", {})
    except (DatabaseUnavailable, psycopg.ProgrammingError):  # unreachable, or never migrated
        return False
    return bool(rows) and (rows[0]["version_num"] == head() or rows[0]["version_num"] not in known())
