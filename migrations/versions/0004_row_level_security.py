"""Row-level security keyed on app.user_id, and the least-privilege role the service uses.

Every table holding user data gets a policy that admits only the rows of the user named by the
transaction-local setting `app.user_id` (set by persistence.database.Database for every transaction); without the
setting no row is visible. FORCE makes the policies bind the tables' owner too.

`todo_api_app` (NOLOGIN) may only read and write rows; production logins are granted it (see
README). Roles are cluster-wide, so downgrade revokes its privileges here but keeps the role.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "todo_api_app"
OWNER_COLUMNS = {"users": "id", "tasks": "user_id", "idempotency_keys": "user_id"}


def upgrade() -> None:
    op.execute(
        f"""
        DO $$ BEGIN
            CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it
        END $$
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON users, tasks, idempotency_keys TO {APP_ROLE}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    for table, owner in OWNER_COLUMNS.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_of_current_user ON {table} "
            f"USING ({owner} = current_setting('app.user_id', true)) "
            f"WITH CHECK ({owner} = current_setting('app.user_id', true))"
        )


def downgrade() -> None:
    for table in OWNER_COLUMNS:
        op.execute(f"DROP POLICY {table}_of_current_user ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON alembic_version FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON users, tasks, idempotency_keys FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
