"""Alembic environment: migrations run online, one instance at a time, in one transaction."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from persistence.tables import metadata

# Any constant shared by every instance; serialises concurrent `todo-api serve` start-ups.
MIGRATION_LOCK = 0x70D0A91


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"prepare_threshold": None})
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `todo-api migrate`")
run_migrations_online()
