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
# A column's `info` for what the service keeps about a task but never shows in one.
INTERNAL = {"internal": True}
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
    # The tags as persistence.tasks.tag_key compares them; task_tags indexes these (migration 0009).
    Column("tag_keys", ARRAY(Text), info=INTERNAL),
    Column("due_date", DateTime(timezone=True)),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The user's feed number of the task's latest change (migration 0007's trigger sets it).
    Column("change_seq", BigInteger, nullable=False, server_default="0", info=INTERNAL),
    Column("recurrence", Text),
    Column("time_zone", Text, nullable=False, server_default="UTC"),
    Column("remind_at", DateTime(timezone=True)),
    # Recurrence and reminders (migration 0008): the task's number in its series, the next
    # occurrence completing it created, and whether its reminder has fired.
    Column("occurrence", Integer, nullable=False, server_default="1", info=INTERNAL),
    Column("next_id", BigInteger, info=INTERNAL),
    Column("reminded", Boolean, nullable=False, server_default=text("false"), info=INTERNAL),
    CheckConstraint("char_length(title) <= 255 AND btrim(title) <> ''", name="title"),
    CheckConstraint("char_length(description) <= 5000", name="description"),
    CheckConstraint("cardinality(tags) <= 10 AND task_tags_valid(tags)", name="tags"),
    CheckConstraint("char_length(recurrence) <= 500 AND btrim(recurrence) <> ''", name="recurrence"),
    CheckConstraint("recurrence IS NULL OR due_date IS NOT NULL", name="recurrence_due"),
    CheckConstraint("char_length(time_zone) BETWEEN 1 AND 64", name="time_zone"),
    Index("ix_tasks_user_created", "user_id", "created_at", "id"),
    Index("ix_tasks_user_updated", "user_id", "updated_at", "id"),
    Index("ix_tasks_user_title", "user_id", literal_column('title COLLATE "C"'), "id"),
    Index("ix_tasks_user_priority", "user_id", "priority", "id"),
    Index("ix_tasks_user_due", "user_id", "due_date", "id"),
    Index("ix_tasks_user_change", "user_id", "change_seq", unique=True),
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

# Each user's feed sequence (migration 0007): the number of their latest change, the newest number
# purged from feed_log, and the epoch this sequence started in. Written only by the triggers.
feed_heads = Table(
    "feed_heads",
    metadata,
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, nullable=False, server_default="0"),
    Column("floor", BigInteger, nullable=False, server_default="0"),
    Column("epoch", BigInteger, nullable=False),
)

# What the feed tells besides tasks' latest states: deletions and reminders, under their numbers.
feed_log = Table(
    "feed_log",
    metadata,
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("task_id", BigInteger, nullable=False),
    Column("task", JSONB),  # a reminder's task as it was when it fired
    Column("late", Boolean),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    CheckConstraint("kind IN ('delete', 'reminder')", name="kind"),
)

# Armed reminders by time, kept by a trigger (migration 0008), for the scheduler alone.
reminders = Table(
    "reminders",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("task_id", BigInteger, primary_key=True),
    Column("remind_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["user_id", "task_id"], ["tasks.user_id", "tasks.id"], ondelete="CASCADE"),
    Index("ix_reminders_remind_at", "remind_at"),
)
