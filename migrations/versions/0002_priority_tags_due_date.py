"""Priority, tags and due date on tasks; existing rows get medium, no tags, no due date.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

priority = postgresql.ENUM("low", "medium", "high", "urgent", name="task_priority")


def upgrade() -> None:
    priority.create(op.get_bind())
    # Both functions are IMMUTABLE so that a CHECK and an expression index may use them.
    op.execute(
        """
        CREATE FUNCTION lower_tags(tags text[]) RETURNS text[]
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        RETURN ARRAY(SELECT lower(tag) FROM unnest(tags) WITH ORDINALITY AS t(tag, n) ORDER BY n)
        """
    )
    op.execute(
        """
        CREATE FUNCTION task_tags_valid(tags text[]) RETURNS boolean
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        RETURN (SELECT coalesce(bool_and(char_length(tag) BETWEEN 1 AND 32 AND btrim(tag) <> ''), true)
                FROM unnest(tags) AS tag)
        """
    )
    op.add_column("tasks", sa.Column("priority", priority, server_default="medium", nullable=False))
    op.add_column("tasks", sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False))
    op.add_column("tasks", sa.Column("due_date", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_tasks_tags"), "tasks", "cardinality(tags) <= 10 AND task_tags_valid(tags)")
    op.create_index("ix_tasks_user_priority", "tasks", ["user_id", "priority", "id"])
    op.create_index("ix_tasks_user_due", "tasks", ["user_id", "due_date", "id"])
    op.create_index("ix_tasks_tags", "tasks", [sa.text("lower_tags(tags)")], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_tasks_tags", "tasks")
    op.drop_index("ix_tasks_user_due", "tasks")
    op.drop_index("ix_tasks_user_priority", "tasks")
    op.drop_constraint(op.f("ck_tasks_tags"), "tasks")
    op.drop_column("tasks", "due_date")
    op.drop_column("tasks", "tags")
    op.drop_column("tasks", "priority")
    op.execute("DROP FUNCTION task_tags_valid(text[])")
    op.execute("DROP FUNCTION lower_tags(text[])")
    priority.drop(op.get_bind())
