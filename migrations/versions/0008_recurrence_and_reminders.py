"""Recurring tasks and reminders.

Public fields: `recurrence` (an RFC 5545 RRULE, which needs a due date), `time_zone` (IANA; the
rule's wall clock) and `remind_at`. Internal ones: `occurrence` (the task's number in its series,
for COUNT), `next_id` (the next occurrence completing it created: set once, so completing it
again — a retry, a toggle, a concurrent request — creates none) and `reminded`.

A reminder is armed while `remind_at` is set, the task is not complete and it has not fired;
changing `remind_at` or `due_date` arms it again. Armed reminders are queued in `reminders`, by
time, kept by a trigger: the scheduler (`fire_due_reminders`) looks only at what is due, never
at all tasks. Firing one locks the task (SKIP LOCKED: a task another host is firing, or a user
is writing, waits for the next round), appends a `reminder` to the user's feed and marks the
task reminded, in one transaction: a reminder fires exactly once whatever the number of hosts
and crashes. Locks are taken in the order every write takes them — the task, then the user's
feed head — so the scheduler and requests never wait for each other in a circle.

`reminders` has no row-level security (it holds ids and times only) and the service's role has
no privilege on it: the SECURITY DEFINER functions read and write it, and everything else under
`app.user_id`, which the scheduler sets to each reminder's owner in turn.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "todo_api_app"
ARMED = "{row}.remind_at IS NOT NULL AND NOT {row}.completed AND NOT {row}.reminded"


def upgrade() -> None:
    schema = op.get_bind().scalar(sa.text("SELECT quote_ident(current_schema())"))
    definer = f"SECURITY DEFINER SET search_path = {schema}, pg_temp"
    op.add_column("tasks", sa.Column("recurrence", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("time_zone", sa.Text(), server_default="UTC", nullable=False))
    op.add_column("tasks", sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("occurrence", sa.Integer(), server_default="1", nullable=False))
    op.add_column("tasks", sa.Column("next_id", sa.BigInteger(), nullable=True))
    op.add_column("tasks", sa.Column("reminded", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_check_constraint(
        op.f("ck_tasks_recurrence"), "tasks", "char_length(recurrence) <= 500 AND btrim(recurrence) <> ''"
    )
    op.create_check_constraint(op.f("ck_tasks_recurrence_due"), "tasks", "recurrence IS NULL OR due_date IS NOT NULL")
    op.create_check_constraint(op.f("ck_tasks_time_zone"), "tasks", "char_length(time_zone) BETWEEN 1 AND 64")

    op.create_table(
        "reminders",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "task_id"], ["tasks.user_id", "tasks.id"], name="fk_reminders_user_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "task_id", name="pk_reminders"),
    )
    op.create_index("ix_reminders_remind_at", "reminders", ["remind_at"])
    op.execute(f"REVOKE ALL ON reminders FROM {APP_ROLE}")

    op.execute(
        """
        CREATE FUNCTION tasks_rearm() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.remind_at IS DISTINCT FROM OLD.remind_at OR NEW.due_date IS DISTINCT FROM OLD.due_date THEN
                NEW.reminded := false;
            END IF;
            IF NEW.recurrence IS DISTINCT FROM OLD.recurrence THEN
                NEW.occurrence := 1;  -- a new rule starts a new series: its COUNT counts from here
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION tasks_queue_reminder() RETURNS trigger LANGUAGE plpgsql {definer} AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND ({ARMED.format(row="OLD")}) = ({ARMED.format(row="NEW")})
               AND (NOT ({ARMED.format(row="NEW")}) OR NEW.remind_at = OLD.remind_at) THEN
                RETURN NULL;  -- armed as it was, for the same time
            END IF;
            IF {ARMED.format(row="NEW")} THEN
                INSERT INTO reminders (user_id, task_id, remind_at) VALUES (NEW.user_id, NEW.id, NEW.remind_at)
                ON CONFLICT (user_id, task_id) DO UPDATE SET remind_at = EXCLUDED.remind_at;
            ELSIF TG_OP = 'UPDATE' THEN
                DELETE FROM reminders WHERE user_id = NEW.user_id AND task_id = NEW.id;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute("CREATE TRIGGER tasks_rearm BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_rearm()")
    op.execute(
        "CREATE TRIGGER tasks_queue_reminder AFTER INSERT OR UPDATE ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_queue_reminder()"
    )
    op.execute(
        f"""
        CREATE FUNCTION fire_due_reminders(batch integer, late_after interval)
        RETURNS TABLE (owner text, task_id bigint) LANGUAGE plpgsql {definer} AS $$
        DECLARE
            due record;
            task tasks;
        BEGIN
            FOR due IN
                SELECT r.user_id, r.task_id FROM reminders AS r
                WHERE r.remind_at <= clock_timestamp() ORDER BY r.remind_at LIMIT batch
            LOOP
                PERFORM set_config('app.user_id', due.user_id, true);
                SELECT * INTO task FROM tasks AS t
                WHERE t.user_id = due.user_id AND t.id = due.task_id AND t.remind_at <= clock_timestamp()
                  AND {ARMED.format(row="t")}
                FOR UPDATE SKIP LOCKED;
                CONTINUE WHEN NOT FOUND;  -- being fired elsewhere, changed, or fired already
                PERFORM feed_append(
                    task.user_id, 'reminder', task.id, to_jsonb(task), clock_timestamp() - task.remind_at > late_after
                );
                UPDATE tasks AS t SET reminded = true WHERE t.user_id = task.user_id AND t.id = task.id;
                owner := task.user_id;
                task_id := task.id;
                RETURN NEXT;
            END LOOP;
            PERFORM set_config('app.user_id', '', true);
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION fire_due_reminders(integer, interval) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION fire_due_reminders(integer, interval) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION fire_due_reminders(integer, interval)")
    op.execute("DROP TRIGGER tasks_queue_reminder ON tasks")
    op.execute("DROP TRIGGER tasks_rearm ON tasks")
    op.execute("DROP FUNCTION tasks_queue_reminder()")
    op.execute("DROP FUNCTION tasks_rearm()")
    op.drop_index("ix_reminders_remind_at", "reminders")
    op.drop_table("reminders")
    op.drop_constraint(op.f("ck_tasks_time_zone"), "tasks")
    op.drop_constraint(op.f("ck_tasks_recurrence_due"), "tasks")
    op.drop_constraint(op.f("ck_tasks_recurrence"), "tasks")
    for column in ("reminded", "next_id", "occurrence", "remind_at", "time_zone", "recurrence"):
        op.drop_column("tasks", column)
