"""How many tasks each user holds, for the cap on tasks per user (MAX_TASKS_PER_USER).

The create statement raises the owner's count only while it is below the cap, in the upsert of
the users row (whose row lock serialises a user's concurrent creates and whose WHERE is checked
against the newest row version), so concurrent creates can never exceed it. Deletes lower it in
the same statement. Counting the tasks instead would read a snapshot taken before the lock.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("task_count", sa.Integer(), server_default="0", nullable=False))
    op.execute("UPDATE users SET task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id)")


def downgrade() -> None:
    op.drop_column("users", "task_count")
