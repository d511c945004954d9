"""The schema as SQLAlchemy Core tables; Alembic migrations create it, tests check they agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

PRIORITIES = ("low", "medium", "high", "urgent")
priority = Enum(*PRIORITIES, name="task_priority")

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("email", Text),
    Column("name", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("task_count", Integer, nullable=False, server_default="0"),  # kept by persistence.tasks
)

tasks = Table(
    "tasks",
    metadata,
    # user_id leads every key so the table can be distributed by it unchanged.
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text),
    Column("completed", Boolean, nullable=False, server_default=text("false")),
    Column("priority", priority, nullable=False, server_default="medium"),
    Column("tags", ARRAY(Text), nullable=False, server_default="{}"),
    Column("due_date", DateTime(timezone=True)),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("char_length(title) <= 255 AND btrim(title) <> ''", name="title"),
    CheckConstraint("char_length(description) <= 5000", name="description"),
    CheckConstraint("cardinality(tags) <= 10 AND task_tags_valid(tags)", name="tags"),
    Index("ix_tasks_user_created", "user_id", "created_at", "id"),
    Index("ix_tasks_user_updated", "user_id", "updated_at", "id"),
    Index("ix_tasks_user_title", "user_id", literal_column('title COLLATE "C"'), "id"),
    Index("ix_tasks_user_priority", "user_id", "priority", "id"),
    Index("ix_tasks_user_due", "user_id", "due_date", "id"),
)

# One row per lower-cased tag of a task, kept in step with tasks.tags by a trigger (migration 0005):
# the tag filter's index, usable under row-level security.
task_tags = Table(
    "task_tags",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("tag", Text, primary_key=True),
    Column("task_id", BigInteger, primary_key=True),
    ForeignKeyConstraint(["user_id", "task_id"], ["tasks.user_id", "tasks.id"], ondelete="CASCADE"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("response", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
