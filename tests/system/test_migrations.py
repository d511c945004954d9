"""The schema's life: migrations go up and down cleanly, match the models, keep existing tasks,
and are applied exactly once however many instances start together."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Index, create_engine, pool, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateIndex

from persistence import schema
from persistence.tables import PRIORITIES, metadata
from tests.support import ROOT
from tests.support.clusters import HEAD, SCRIPTS
from tests.support.service import Service, service_env
from tests.support.tokens import mint

STEPS = [(script.down_revision, script.revision) for script in reversed(list(SCRIPTS.walk_revisions()))]

# Everything a migration can leave in a database, one line per object, so that two states compare.
CATALOG = (
    # An ACL reset by REVOKE is spelled out rather than NULL; acldefault() makes both the same.
    "SELECT format('%s %s rls=%s,%s acl=%s', relkind, relname, relrowsecurity, relforcerowsecurity, "
    "coalesce(relacl, acldefault(CASE relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\", relowner))) "
    "FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    "SELECT format('schema %s acl=%s', nspname, coalesce(nspacl, acldefault('n'::\"char\", nspowner))) "
    "FROM pg_namespace WHERE nspname = 'public'",
    "SELECT format('%s.%s %s null=%s default=%s identity=%s', table_name, column_name, udt_name, is_nullable, "
    "column_default, is_identity) FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "SELECT format('%s %s', t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)) "
    "FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid "
    "WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'r', 'm') GROUP BY t.typname",
    "SELECT format('function %s', oid::regprocedure) FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    "SELECT format('policy %s %s %s', polrelid::regclass, polname, pg_get_expr(polqual, polrelid)) FROM pg_policy",
    "SELECT format('trigger %s %s', tgrelid::regclass, tgname) FROM pg_trigger WHERE NOT tgisinternal",
    "SELECT format('extension %s', extname) FROM pg_extension WHERE extname <> 'plpgsql'",
)

CHECK_CONSTRAINTS = "SELECT conname FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace"


@contextmanager
def connect(url: str) -> Iterator[Any]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def snapshot(url: str) -> set[str]:
    """Every object of ours in the database (Alembic's own bookkeeping table aside)."""
    with connect(url) as connection:
        rows = {row for query in CATALOG for row in connection.scalars(text(query))}
    return {row for row in rows if "alembic_version" not in row}


def version_rows(url: str) -> list[str]:
    with connect(url) as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


@pytest.fixture
def migrated_url(empty_url: str) -> str:
    schema.migrate(empty_url)
    return empty_url


def test_upgrade_to_head_then_downgrade_to_base_leaves_nothing_then_upgrades_again(empty_url: str) -> None:
    empty = snapshot(empty_url)
    schema.migrate(empty_url)
    at_head = snapshot(empty_url)
    assert schema.current(empty_url) == HEAD
    assert {"r users", "r tasks", "r idempotency_keys"} <= {" ".join(row.split()[:2]) for row in at_head}

    schema.migrate(empty_url, "base")
    assert schema.current(empty_url) is None
    assert snapshot(empty_url) == empty, "the downgrade to base left objects of ours behind"
    assert version_rows(empty_url) == []

    schema.migrate(empty_url)
    assert schema.current(empty_url) == HEAD
    assert snapshot(empty_url) == at_head


@pytest.mark.parametrize(("down", "up"), STEPS, ids=[up for _, up in STEPS])
def test_each_revision_steps_up_and_back_down_to_exactly_the_schema_before_it(
    empty_url: str, down: str | None, up: str
) -> None:
    if down is not None:
        schema.migrate(empty_url, down)
    before = snapshot(empty_url)

    schema.migrate(empty_url, up)
    after = snapshot(empty_url)
    assert version_rows(empty_url) == [up]
    assert after != before, f"revision {up} changed nothing"

    schema.migrate(empty_url, down or "base")
    assert schema.current(empty_url) == down
    assert snapshot(empty_url) == before, f"downgrading {up} did not restore the schema of {down or 'base'}"

    schema.migrate(empty_url, up)
    assert snapshot(empty_url) == after


def _ddl(index: Index | str) -> str:
    """An index definition with the spelling differences between pg_indexes and SQLAlchemy removed."""
    if isinstance(index, Index):
        index = str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    return " ".join(index.replace("public.", "").replace("USING btree ", "").split())


def test_models_in_tables_py_do_not_drift_from_the_migrations(migrated_url: str) -> None:
    with connect(migrated_url) as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, metadata)
        index_definitions = dict(connection.execute(text("SELECT indexname, indexdef FROM pg_indexes")).all())
        check_names = set(connection.scalars(text(CHECK_CONSTRAINTS)))
        labels = list(connection.scalars(text("SELECT unnest(enum_range(NULL::task_priority))::text")))

    # PostgreSQL reflection drops an index column's COLLATE, so Alembic always reports a
    # model index like (user_id, title COLLATE "C", id) as removed and re-added. Drop exactly
    # those remove/add pairs, and compare such indexes' full definitions directly instead.
    added = {diff[1].name for diff in differences if diff[0] == "add_index" and "COLLATE" in _ddl(diff[1])}
    echoed = added & {diff[1].name for diff in differences if diff[0] == "remove_index"}
    drift = [diff for diff in differences if not (diff[0] in {"add_index", "remove_index"} and diff[1].name in echoed)]
    assert drift == []
    for table in metadata.tables.values():
        for index in table.indexes:
            if index.name in echoed:
                assert _ddl(index_definitions[index.name]) == _ddl(index)

    # Autogenerate compares neither CHECK constraints nor enum labels.
    model_checks = {
        str(constraint.name)
        for table in metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    assert check_names == model_checks
    assert tuple(labels) == PRIORITIES


def test_revision_0002_gives_existing_tasks_the_defaults_and_they_are_served(empty_url: str) -> None:
    schema.migrate(empty_url, "0001")
    owner = f"legacy-{uuid.uuid4().hex[:8]}"
    with connect(empty_url) as connection:
        connection.execute(text("INSERT INTO users (id, email) VALUES (:id, :id || '@example.com')"), {"id": owner})
        connection.execute(
            text(
                "INSERT INTO tasks (user_id, title, description, completed) "
                "VALUES (:id, 'Legacy open', 'kept', false), (:id, 'Legacy done', NULL, true)"
            ),
            {"id": owner},
        )
    schema.migrate(empty_url)

    with connect(empty_url) as connection:
        stored = connection.execute(text("SELECT priority::text, tags, due_date FROM tasks")).all()
    assert [tuple(row) for row in stored] == [("medium", [], None)] * 2

    service = Service(service_env(empty_url))
    try:
        headers = {"Authorization": f"Bearer {mint(owner)}"}
        with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as http:
            listed = http.get("/api/tasks", params={"sort": "title"})
            assert listed.status_code == 200, listed.text
            tasks = listed.json()
            assert [(task["title"], task["description"], task["status"]) for task in tasks] == [
                ("Legacy done", None, "complete"),
                ("Legacy open", "kept", "incomplete"),
            ]
            assert all(
                (task["user_id"], task["priority"], task["tags"], task["due_date"]) == (owner, "medium", [], None)
                for task in tasks
            )
            updated = http.patch(f"/api/tasks/{tasks[0]['id']}", json={"priority": "high", "tags": ["old"]})
            assert updated.status_code == 200, updated.text
            assert (updated.json()["priority"], updated.json()["tags"]) == ("high", ["old"])
    finally:
        service.stop()


def test_two_instances_starting_at_once_on_an_empty_database_migrate_it_exactly_once(empty_url: str) -> None:
    instances = [Service(service_env(empty_url), migrate=True, wait=False) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        for instance in instances:
            instance.wait_until_answering("/ready", timeout=deadline - time.monotonic())
        assert version_rows(empty_url) == [HEAD]
    finally:
        for instance in instances:
            instance.stop()


def test_migrate_command_moves_the_schema_to_a_revision_and_back(empty_url: str) -> None:
    for arguments, expected in [(["0001"], "0001"), ([], HEAD), (["0001"], "0001"), (["base"], None)]:
        result = cli_migrate(empty_url, *arguments)
        assert result.returncode == 0, result.stderr
        assert f"schema at {expected or 'base'}" in result.stdout
        assert schema.current(empty_url) == expected


def cli_migrate(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "todo_api.cli", "migrate", *arguments],
        env=service_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def store_tasks(url: str, count: int) -> str:
    """`count` tasks of a new user, written straight into the database; returns the user id."""
    owner = f"keeper-{uuid.uuid4().hex[:8]}"
    with connect(url) as connection:
        connection.execute(text("INSERT INTO users (id, email) VALUES (:id, :id || '@example.com')"), {"id": owner})
        connection.execute(
            text(
                "INSERT INTO tasks (user_id, title, tags) SELECT :id, 'kept ' || n, '{a}' FROM generate_series(1, :n) n"
            ),
            {"id": owner, "n": count},
        )
    return owner


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("base", ["table tasks (3 rows)", "table users (1 rows)"]),
        ("0001", ["tasks.due_date", "tasks.priority", "tasks.tags", "(3 rows)"]),
    ],
)
def test_a_downgrade_that_would_delete_stored_data_is_refused_unless_told_yes(
    migrated_url: str, target: str, named: list[str]
) -> None:
    store_tasks(migrated_url, 3)
    before = snapshot(migrated_url)

    refused = cli_migrate(migrated_url, target)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert all(words in lines[0] for words in named), lines[0]
    assert "--yes" in lines[0] and "task_tags" not in lines[0], lines[0]
    assert schema.current(migrated_url) == HEAD
    assert snapshot(migrated_url) == before
    with connect(migrated_url) as connection:
        assert connection.scalar(text("SELECT count(*) FROM tasks WHERE tags = '{a}'")) == 3

    told = cli_migrate(migrated_url, target, "--yes")
    assert told.returncode == 0, told.stderr
    assert schema.current(migrated_url) == (None if target == "base" else target)


def test_a_downgrade_counts_the_rows_that_the_owners_own_policies_hide(db: Engine, empty_url: str) -> None:
    """As in production the owner is no superuser, and forced row-level security hides every row from it."""
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    admin = db.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {owner} LOGIN CREATEROLE"))
        connection.execute(text(f'ALTER DATABASE "{make_url(empty_url).database}" OWNER TO {owner}'))
    owner_url = make_url(empty_url).set(username=owner).render_as_string(hide_password=False)
    try:
        schema.migrate(owner_url)
        store_tasks(empty_url, 2)  # as the superuser, past the policies
        with connect(owner_url) as connection:
            assert connection.scalar(text("SELECT count(*) FROM tasks")) == 0, "the policies do not hide the rows"

        refused = cli_migrate(owner_url, "base")
        assert refused.returncode == 1 and "table tasks (2 rows)" in refused.stderr, refused.stderr
        assert schema.current(empty_url) == HEAD
    finally:
        with connect(empty_url) as connection:
            connection.execute(text(f"REASSIGN OWNED BY {owner} TO CURRENT_USER"))
            connection.execute(text(f"DROP OWNED BY {owner}"))
        with admin.connect() as connection:
            connection.execute(text(f"DROP ROLE {owner}"))


def test_a_downgrade_that_deletes_no_stored_row_needs_no_flag(empty_url: str) -> None:
    schema.migrate(empty_url, "0006")  # the revisions below hold no data of their own
    store_tasks(empty_url, 2)
    # users.task_count and task_tags are counted and rebuilt from tasks, idempotency_keys is empty,
    # 0004 only lifts policies.
    for target in ["0004", "0003", "0002"]:
        result = cli_migrate(empty_url, target)
        assert result.returncode == 0, result.stderr
        assert schema.current(empty_url) == target
    assert cli_migrate(empty_url, "0001").returncode == 1, "tasks.priority still holds rows"
    with connect(empty_url) as connection:
        connection.execute(text("DELETE FROM tasks"))
    assert cli_migrate(empty_url, "0001").returncode == 0
    assert schema.current(empty_url) == "0001"


def test_upgrades_keep_stored_data_silently_and_run_once(empty_url: str) -> None:
    schema.migrate(empty_url, "0001")
    with connect(empty_url) as connection:
        connection.execute(text("INSERT INTO users (id) VALUES ('legacy')"))
        connection.execute(text("INSERT INTO tasks (user_id, title) VALUES ('legacy', 'kept')"))
    for _ in range(2):
        result = cli_migrate(empty_url)
        assert (result.returncode, result.stderr) == (0, "")
        assert schema.current(empty_url) == HEAD
    with connect(empty_url) as connection:
        assert connection.scalar(text("SELECT title FROM tasks")) == "kept"
