"""Alembic migrations: apply them, and tell whether the database is at the newest one."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from persistence.database import DatabaseUnavailable, run

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@cache
def head() -> str:
    """The newest revision in migrations/."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(url: str) -> str | None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, upgrading or downgrading as needed; safe to run concurrently."""
    now = current(url)
    if revision == "head" and now == head():
        return  # the common start-up: no need to run Alembic's environment at all
    config = _config(url)
    scripts = ScriptDirectory.from_config(config)
    if revision != "head" and now is not None:
        below_now = {script.revision for script in scripts.iterate_revisions(now, "base")}
        target = scripts.get_revision(revision)
        if revision == "base" or (target is not None and target.revision in below_now and target.revision != now):
            command.downgrade(config, revision)
            return
    command.upgrade(config, revision)


async def is_current() -> bool:
    try:
        rows = await run(None, "SELECT version_num FROM alembic_version", {})
    except (DatabaseUnavailable, psycopg.ProgrammingError):  # unreachable, or never migrated
        return False
    return bool(rows) and rows[0]["version_num"] == head()
