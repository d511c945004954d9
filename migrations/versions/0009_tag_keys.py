"""Tags compare by one rule: trimmed and case-folded (`persistence.tasks.tag_key`).

The tag filter's index rows (task_tags) were SQL's `lower()` of each tag, while writes removed
duplicates by Python's `casefold()` and filters lower-cased without trimming: `?tag=STRASSE` could
not find the task whose `Straße` had absorbed `STRASSE` as a duplicate, nor `?tag= work ` a `work`.
Now the service stores each task's keys beside its tags (`tag_keys`, as the rule makes them) and
the trigger indexes those; a row written by an older release, without keys, is indexed by
`lower()` as before until it is next written (expand, then contract in a later release).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 1000


def _sync_task_tags(keys: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION sync_task_tags() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                DELETE FROM task_tags WHERE user_id = NEW.user_id AND task_id = NEW.id;
            END IF;
            INSERT INTO task_tags (user_id, tag, task_id)
            SELECT DISTINCT NEW.user_id, tag, NEW.id FROM unnest({keys}) AS tag;
            RETURN NULL;
        END $$
        """


def upgrade() -> None:
    op.add_column("tasks", sa.Column("tag_keys", postgresql.ARRAY(sa.Text()), nullable=True))
    op.execute(_sync_task_tags("coalesce(NEW.tag_keys, lower_tags(NEW.tags))"))
    op.execute("DROP TRIGGER tasks_sync_tags ON tasks")
    op.execute(
        "CREATE TRIGGER tasks_sync_tags AFTER INSERT OR UPDATE OF tags, tag_keys ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION sync_task_tags()"
    )
    # Existing tags get their keys (the trigger re-indexes each row), a batch at a time; the rule
    # is written out here as it is in this revision, so that this migration keeps its meaning.
    connection = op.get_bind()
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE task_tags NO FORCE ROW LEVEL SECURITY")
    select = sa.text(
        "SELECT user_id, id, tags FROM tasks WHERE tag_keys IS NULL AND cardinality(tags) > 0 LIMIT :batch"
    )
    update = sa.text("UPDATE tasks SET tag_keys = :keys WHERE user_id = :user_id AND id = :id")
    while rows := connection.execute(select, {"batch": BATCH}).all():
        keyed = [
            {"user_id": user, "id": task, "keys": [tag.strip().casefold() for tag in tags]} for user, task, tags in rows
        ]
        connection.execute(update, keyed)
    op.execute("ALTER TABLE task_tags FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_sync_tags ON tasks")
    op.execute(_sync_task_tags("lower_tags(NEW.tags)"))
    op.execute(
        "CREATE TRIGGER tasks_sync_tags AFTER INSERT OR UPDATE OF tags ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION sync_task_tags()"
    )
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE task_tags NO FORCE ROW LEVEL SECURITY")
    op.execute("DELETE FROM task_tags")
    op.execute(
        "INSERT INTO task_tags (user_id, tag, task_id) "
        "SELECT DISTINCT user_id, tag, id FROM tasks, unnest(lower_tags(tags)) AS tag"
    )
    op.execute("ALTER TABLE task_tags FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")
    op.drop_column("tasks", "tag_keys")
