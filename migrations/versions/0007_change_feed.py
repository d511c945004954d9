"""The change feed: every write of a user's tasks gets the next number of that user's sequence.

A BEFORE INSERT OR UPDATE trigger on tasks stamps `tasks.change_seq` with the user's next number
whenever the task changes (its `version` moves); an AFTER DELETE trigger appends a tombstone to
`feed_log` under its own number. Reminders (a later migration) are appended to `feed_log` too.

Why a reader can never pass a number whose change commits later: the next number is taken by
updating the user's row in `feed_heads`, and that row stays locked until the transaction ends.
So the writer that takes n + 1 waits until the one holding n has committed (or rolled back, when
n is taken again) — one user's changes commit in the order of their numbers, and a snapshot
that sees number n sees every number below it. A sequence would not do: it hands out numbers
before commit, in start order, and transactions commit in any order.

The trigger functions are SECURITY DEFINER so that the service's role may read `feed_heads` but
never write it; row-level security still scopes `feed_log` by `app.user_id`, which they run
under. `feed_heads.epoch` changes when a user's sequence starts again (the row is new): change
tokens carry it, so a token of an older sequence is refused rather than misread. Each write
notifies channel `todo_api_feed` with the user's id, so that live streams wake at once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APP_ROLE = "todo_api_app"
CHANNEL = "todo_api_feed"
EPOCH = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"  # a new sequence's: now, in µs


def upgrade() -> None:
    schema = op.get_bind().scalar(sa.text("SELECT quote_ident(current_schema())"))
    definer = f"SECURITY DEFINER SET search_path = {schema}, pg_temp"
    op.create_table(
        "feed_heads",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("floor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_feed_heads_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name="pk_feed_heads"),
    )
    op.create_table(
        "feed_log",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.CheckConstraint("kind IN ('delete', 'reminder')", name=op.f("ck_feed_log_kind")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_feed_log_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "seq", name="pk_feed_log"),
    )
    op.add_column("tasks", sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False))
    # Existing tasks get numbers in the order they last changed; each user's head is their count.
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE users NO FORCE ROW LEVEL SECURITY")
    op.execute(
        "UPDATE tasks SET change_seq = numbered.n FROM ("
        " SELECT user_id, id, row_number() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS n FROM tasks"
        ") AS numbered WHERE tasks.user_id = numbered.user_id AND tasks.id = numbered.id"
    )
    op.execute(
        f"INSERT INTO feed_heads (user_id, seq, epoch) "
        f"SELECT users.id, (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id), {EPOCH} FROM users"
    )
    op.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")
    op.create_index("ix_tasks_user_change", "tasks", ["user_id", "change_seq"], unique=True)

    op.execute(
        f"""
        CREATE FUNCTION feed_advance(owner text) RETURNS bigint LANGUAGE plpgsql {definer} AS $$
        DECLARE
            next_seq bigint;
        BEGIN
            INSERT INTO feed_heads AS head (user_id, seq, epoch) VALUES (owner, 1, {EPOCH})
            ON CONFLICT (user_id) DO UPDATE SET seq = head.seq + 1
            RETURNING seq INTO next_seq;
            PERFORM pg_notify('{CHANNEL}', owner);
            RETURN next_seq;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION tasks_feed_stamp() RETURNS trigger LANGUAGE plpgsql {definer} AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND NEW.version = OLD.version THEN
                NEW.change_seq := OLD.change_seq;  -- nothing a client sees has changed
            ELSE
                NEW.change_seq := feed_advance(NEW.user_id);
            END IF;
            RETURN NEW;
        END $$
        """
    )
    # Tombstones past the retention (`app.changes_retention_days`, else 30) are purged by later
    # appends, a bounded batch at a time; the head's floor remembers the newest number purged.
    op.execute(
        f"""
        CREATE FUNCTION feed_append(owner text, entry_kind text, entry_task bigint, snapshot jsonb, is_late boolean)
        RETURNS bigint LANGUAGE plpgsql {definer} AS $$
        DECLARE
            next_seq bigint;
            retention interval := make_interval(
                days => coalesce(nullif(current_setting('app.changes_retention_days', true), '')::int, 30));
            purged bigint;
        BEGIN
            next_seq := feed_advance(owner);
            INSERT INTO feed_log (user_id, seq, kind, task_id, task, late)
            VALUES (owner, next_seq, entry_kind, entry_task, snapshot, is_late);
            WITH oldest AS (
                SELECT seq FROM feed_log WHERE user_id = owner ORDER BY seq LIMIT 100
            ), gone AS (
                DELETE FROM feed_log AS log USING oldest
                WHERE log.user_id = owner AND log.seq = oldest.seq AND log.at < clock_timestamp() - retention
                RETURNING log.seq
            )
            SELECT max(seq) INTO purged FROM gone;
            IF purged IS NOT NULL THEN
                UPDATE feed_heads SET floor = greatest(floor, purged) WHERE user_id = owner;
            END IF;
            RETURN next_seq;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION tasks_feed_tombstone() RETURNS trigger LANGUAGE plpgsql {definer} AS $$
        BEGIN
            -- Gone with its owner (ON DELETE CASCADE from users): no feed is left to tell.
            IF EXISTS (SELECT FROM users WHERE id = OLD.user_id) THEN
                PERFORM feed_append(OLD.user_id, 'delete', OLD.id, NULL, NULL);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tasks_feed_stamp BEFORE INSERT OR UPDATE ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_feed_stamp()"
    )
    op.execute(
        "CREATE TRIGGER tasks_feed_tombstone AFTER DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_feed_tombstone()"
    )
    for function in ("feed_advance(text)", "feed_append(text, text, bigint, jsonb, boolean)"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    op.execute("ALTER TABLE feed_log ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE feed_log FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY feed_log_of_current_user ON feed_log "
        "USING (user_id = current_setting('app.user_id', true)) "
        "WITH CHECK (user_id = current_setting('app.user_id', true))"
    )
    # Heads hold numbers only: live streams read those of all their users at once.
    op.execute(f"GRANT SELECT ON feed_heads, feed_log TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON feed_heads, feed_log FROM {APP_ROLE}")
    op.execute("DROP TRIGGER tasks_feed_tombstone ON tasks")
    op.execute("DROP TRIGGER tasks_feed_stamp ON tasks")
    op.execute("DROP FUNCTION tasks_feed_tombstone()")
    op.execute("DROP FUNCTION feed_append(text, text, bigint, jsonb, boolean)")
    op.execute("DROP FUNCTION tasks_feed_stamp()")
    op.execute("DROP FUNCTION feed_advance(text)")
    op.drop_index("ix_tasks_user_change", "tasks")
    op.drop_column("tasks", "change_seq")
    op.drop_table("feed_log")
    op.drop_table("feed_heads")
