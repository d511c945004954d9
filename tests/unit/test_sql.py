"""The SQL of the task statements, as PostgreSQL receives it, kept in golden files: a change to a
statement shows in the diff of `tests/unit/sql/`, and grep finds what a listing really runs.

After changing a statement on purpose: `TODO_API_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_sql.py`,
then read the diff of the files it rewrote. In process, no database.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from persistence import tasks

GOLDEN = Path(__file__).parent / "sql"
CREATED_FIELDS = ("description", "priority", "tag_keys", "tags", "title")


def listing_with_tag_and_cursor() -> tuple[Any, dict[str, Any]]:
    params: dict[str, Any] = {"user_id": "alice", "limit": 50}
    conditions = tuple(tasks._conditions(tasks.Filters(tags=(" Work ",), completed=False), params))
    order = tasks.Order("created_at", descending=True)
    position = tasks._position(order, ["2026-12-01T09:00:00+00:00", 41], params)
    return tasks._sql(tasks._list, conditions, order, position), params


def statement(build: Callable[..., Any], *args: Any) -> Callable[[], tuple[Any, dict[str, Any]]]:
    return lambda: (tasks._sql(build, *args), {})


STATEMENTS: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
    "list_with_tag_and_cursor": listing_with_tag_and_cursor,
    "get": statement(tasks._get),
    "create": statement(tasks._insert_task, CREATED_FIELDS),
    "create_with_idempotency_key.1_claim": statement(tasks._claim),
    "create_with_idempotency_key.2_insert_remembered": statement(tasks._insert_remembered, CREATED_FIELDS),
    "create_with_idempotency_key.3_replay": statement(tasks._replay),
    "create_with_idempotency_key.4_replayed_task": statement(tasks._replayed),
    "update_version_checked": statement(tasks._update, ("priority", "title"), False, True),
    "toggle_completed": statement(tasks._update, (), True, False),
    "complete_recurring.1_lock": statement(tasks._lock),
    "complete_recurring.2_next_occurrence": statement(tasks._next),
    "complete_recurring.3_link_next": statement(tasks._link_next),
    "delete": statement(tasks._delete, False),
    "delete_version_checked": statement(tasks._delete, True),
}


def rendered(name: str) -> str:
    compiled, params = STATEMENTS[name]()
    header = f"-- {name}: persistence/tasks.py, as compiled for psycopg\n"
    constants = {key: value for key, value in compiled.constants.items() if f"%({key})s" in compiled.sql}
    for kind, values in (("parameters", params), ("constants SQLAlchemy binds", constants)):
        if values:
            header += f"-- {kind}: " + ", ".join(f"{key}={value!r}" for key, value in sorted(values.items())) + "\n"
    return header + "\n".join(line.rstrip() for line in compiled.sql.strip().splitlines()) + "\n"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_statement_is_the_sql_of_its_golden_file(name: str) -> None:
    path = GOLDEN / f"{name}.sql"
    if os.environ.get("TODO_API_UPDATE_GOLDEN") == "1":
        path.write_text(rendered(name))
    assert path.exists(), f"{path} is missing: run with TODO_API_UPDATE_GOLDEN=1 to write it"
    assert rendered(name) == path.read_text(), f"{name} changed: review it, then TODO_API_UPDATE_GOLDEN=1"


def test_every_golden_file_belongs_to_a_statement() -> None:
    assert {path.stem for path in GOLDEN.glob("*.sql")} == set(STATEMENTS)


def test_a_tag_filter_binds_the_tags_key_and_the_cursor_its_values() -> None:
    _, params = listing_with_tag_and_cursor()
    assert params["tag_0"] == "work"
    assert params["after"] == datetime(2026, 12, 1, 9, tzinfo=UTC) and params["after_id"] == 41
