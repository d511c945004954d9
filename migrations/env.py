"""Alembic environment: migrations run online, on the connection persistence.schema.migrate opens
(in its transaction, under its lock)."""

from alembic import context

from persistence.tables import metadata

if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `todo-api migrate`")
connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("migrations run through `todo-api migrate`, which opens their connection")
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
