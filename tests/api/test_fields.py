"""Priority, tags and due date, and how POST, PUT, PATCH and …/complete write every field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import TASK_FIELDS
from tests.support.problems import assert_problem
from tests.support.users import User

Fields = dict[str, Any]
WRITES = ["POST", "PUT", "PATCH"]
FULL: Fields = {
    "title": "File the report",
    "description": "numbers first",
    "completed": True,
    "priority": "high",
    "tags": ["work", "finance"],
    "due_date": "2030-01-31T17:00:00Z",
}
OTHER: Fields = {
    "title": "Renamed",
    "description": "other notes",
    "completed": False,
    "priority": "low",
    "tags": ["home"],
    "due_date": "2031-07-01T08:30:00Z",
}


def write(user: User, method: str, fields: Fields) -> httpx.Response:
    """POST a new task, or PUT/PATCH an existing one, with `fields` (PUT and POST get a title)."""
    if method == "POST":
        return user.http.post("/api/tasks", json={"title": "a task", **fields})
    task = user.create(title="before")
    if method == "PUT":
        return user.http.put(f"/api/tasks/{task['id']}", json={"title": "a task", **fields})
    return user.http.patch(f"/api/tasks/{task['id']}", json=fields)


def stored(db: Engine, user_id: str) -> list[dict[str, Any]]:
    """Every row of the user's tasks, as PostgreSQL has them."""
    with db.connect() as connection:
        rows = connection.execute(text("SELECT * FROM tasks WHERE user_id = :user ORDER BY id"), {"user": user_id})
        return [dict(row) for row in rows.mappings()]


def stored_task(db: Engine, task: Fields) -> dict[str, Any]:
    (row,) = [row for row in stored(db, task["user_id"]) if row["id"] == task["id"]]
    return row


def assert_rejected(db: Engine, user: User, send: Callable[[], httpx.Response], field: str) -> None:
    """`send()` is a 422 naming `field`, and nothing the user has changed."""
    before = stored(db, user.id)
    problem = assert_problem(send(), 422)
    assert field in {error["field"].split(".")[0] for error in problem["errors"]}, problem
    assert stored(db, user.id) == before


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_priority_defaults_to_medium_tags_to_empty_and_due_date_to_null(alice: User, db: Engine) -> None:
    task = alice.create(title="plain")
    assert (task["priority"], task["tags"], task["due_date"]) == ("medium", [], None)
    row = stored_task(db, task)
    assert (row["priority"], row["tags"], row["due_date"]) == ("medium", [], None)


@pytest.mark.parametrize("priority", ["low", "medium", "high", "urgent"])
@pytest.mark.parametrize("method", WRITES)
def test_every_priority_can_be_written(alice: User, db: Engine, method: str, priority: str) -> None:
    response = write(alice, method, {"priority": priority})
    assert response.status_code in (200, 201), response.text
    assert response.json()["priority"] == priority
    assert stored_task(db, response.json())["priority"] == priority


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (["  Work ", "home", "WORK", "errands", " Home", "work"], ["Work", "home", "errands"]),
        (["b", "a", "B", "c", "A"], ["b", "a", "c"]),
        (["Straße", "STRASSE"], ["Straße"]),
        ([], []),
    ],
)
def test_tags_are_trimmed_and_deduplicated_case_insensitively_keeping_first_spelling_and_order(
    alice: User, db: Engine, method: str, sent: list[str], kept: list[str]
) -> None:
    response = write(alice, method, {"tags": sent})
    assert response.status_code in (200, 201), response.text
    assert response.json()["tags"] == kept
    assert stored_task(db, response.json())["tags"] == kept


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ([f"tag{n}" for n in range(10)], [f"tag{n}" for n in range(10)]),
        (["x" * 32], ["x" * 32]),
        (["  " + "y" * 32 + "\t"], ["y" * 32]),
        (["é" * 32], ["é" * 32]),
        (["a"], ["a"]),
    ],
    ids=["ten tags", "32 characters", "32 characters once trimmed", "32 non-ASCII characters", "one character"],
)
def test_tags_at_the_limits_are_accepted(alice: User, sent: list[str], kept: list[str]) -> None:
    assert alice.create(tags=sent)["tags"] == kept


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2030-01-31T17:00:00Z", "2030-01-31T17:00:00+00:00"),
        ("2030-01-31T17:00:00+02:00", "2030-01-31T15:00:00+00:00"),
        ("2030-01-31T23:30:00-05:00", "2030-02-01T04:30:00+00:00"),
        ("2030-01-31T17:00:00.250+05:30", "2030-01-31T11:30:00.250+00:00"),
        ("2030-01-31T17:00:00+00:00", "2030-01-31T17:00:00+00:00"),
    ],
)
def test_due_date_with_any_offset_is_stored_and_returned_in_utc_with_z(
    alice: User, db: Engine, method: str, sent: str, expected: str
) -> None:
    response = write(alice, method, {"due_date": sent})
    assert response.status_code in (200, 201), response.text
    task = response.json()
    assert task["due_date"].endswith("Z") and "+" not in task["due_date"]
    assert instant(task["due_date"]) == datetime.fromisoformat(expected)
    assert stored_task(db, task)["due_date"] == datetime.fromisoformat(expected)
    assert alice.http.get(f"/api/tasks/{task['id']}").json()["due_date"] == task["due_date"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_null_due_date_clears_it(alice: User, db: Engine, method: str) -> None:
    task = alice.create(due_date="2030-01-31T17:00:00Z")
    body = {"title": task["title"], "due_date": None} if method == "PUT" else {"due_date": None}
    response = alice.http.request(method, f"/api/tasks/{task['id']}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["due_date"] is None
    assert stored_task(db, task)["due_date"] is None


BAD_FIELDS: list[tuple[Fields, str]] = [
    ({"priority": "critical"}, "priority"),
    ({"priority": "HIGH"}, "priority"),
    ({"priority": ""}, "priority"),
    ({"priority": None}, "priority"),
    ({"priority": 2}, "priority"),
    ({"tags": [f"tag{n}" for n in range(11)]}, "tags"),
    ({"tags": ["x" * 33]}, "tags"),
    ({"tags": ["ok", "  " + "z" * 33 + "  "]}, "tags"),
    ({"tags": ["ok", "   "]}, "tags"),
    ({"tags": [""]}, "tags"),
    ({"tags": ["nul\u0000"]}, "tags"),
    ({"tags": "work"}, "tags"),
    ({"tags": [1]}, "tags"),
    ({"tags": None}, "tags"),
    ({"due_date": "not a date"}, "due_date"),
    ({"due_date": "2030-01-31"}, "due_date"),
    ({"due_date": "2030-01-31T17:00:00"}, "due_date"),
    ({"due_date": "2030-02-30T00:00:00Z"}, "due_date"),
    ({"due_date": "2030-01-31T25:00:00Z"}, "due_date"),
    ({"due_date": 1896195600}, "due_date"),
    ({"status": "complete"}, "status"),
    ({"completed": "yes"}, "completed"),
    ({"description": 5}, "description"),
]


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize(("fields", "field"), BAD_FIELDS, ids=lambda v: repr(v)[:40])
def test_invalid_field_is_422_and_changes_nothing(
    alice: User, db: Engine, method: str, fields: Fields, field: str
) -> None:
    task = alice.create(**FULL)
    if method == "POST":
        assert_rejected(db, alice, lambda: alice.http.post("/api/tasks", json={"title": "new", **fields}), field)
    else:
        body = {"title": "new", **fields} if method == "PUT" else fields
        assert_rejected(db, alice, lambda: alice.http.request(method, f"/api/tasks/{task['id']}", json=body), field)


def test_put_without_fields_other_than_title_keeps_them(alice: User, db: Engine) -> None:
    task = alice.create(**FULL)
    before = stored_task(db, task)
    response = alice.http.put(f"/api/tasks/{task['id']}", json={"title": "  Renamed  "})
    assert response.status_code == 200, response.text
    assert response.json() == {**task, "title": "Renamed", "updated_at": response.json()["updated_at"]}
    after = stored_task(db, task)
    bookkeeping = {"updated_at": None, "version": None, "change_seq": None}  # these move with every change
    assert {**after, "title": before["title"], **bookkeeping} == {**before, **bookkeeping}


@pytest.mark.parametrize("field", [name for name in OTHER if name != "title"])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_change_only_the_fields_given(alice: User, method: str, field: str) -> None:
    task = alice.create(**FULL)
    body = {"title": task["title"], field: OTHER[field]} if method == "PUT" else {field: OTHER[field]}
    response = alice.http.request(method, f"/api/tasks/{task['id']}", json=body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated[field] == OTHER[field]
    unchanged = TASK_FIELDS - {field, "status", "updated_at"}
    assert {name: updated[name] for name in unchanged} == {name: task[name] for name in unchanged}
    assert alice.http.get(f"/api/tasks/{task['id']}").json() == updated


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "Renamed"},
        {"description": None},
        {"description": "new", "tags": []},
        {"completed": False, "priority": "urgent", "due_date": None},
        OTHER,
        {**OTHER, "description": None, "due_date": None, "tags": []},
    ],
    ids=lambda changes: "+".join(changes),
)
def test_patch_changes_any_subset_and_null_clears(alice: User, db: Engine, changes: Fields) -> None:
    task = alice.create(**FULL)
    response = alice.http.patch(f"/api/tasks/{task['id']}", json=changes)
    assert response.status_code == 200, response.text
    updated = response.json()
    expected = {**task, **changes, "status": "complete" if changes.get("completed", True) else "incomplete"}
    assert {**updated, "updated_at": None} == {**expected, "updated_at": None}
    row = stored_task(db, task)
    assert {name: row[name] for name in ("title", "description", "completed", "priority", "tags")} == {
        name: expected[name] for name in ("title", "description", "completed", "priority", "tags")
    }


@pytest.mark.parametrize(
    "body",
    [{}, {"description": "no title"}, {"title": "   "}, {"title": None}, {"title": ""}],
    ids=["empty", "no title", "blank title", "null title", "empty title"],
)
def test_put_requires_a_title(alice: User, db: Engine, body: Fields) -> None:
    task = alice.create(**FULL)
    assert_rejected(db, alice, lambda: alice.http.put(f"/api/tasks/{task['id']}", json=body), "title")


def test_patch_with_no_field_is_422_and_changes_nothing(alice: User, db: Engine) -> None:
    task = alice.create(**FULL)
    before = stored(db, alice.id)
    problem = assert_problem(alice.http.patch(f"/api/tasks/{task['id']}", json={}), 422)
    assert problem["errors"] == [{"field": "body", "message": "must name at least one field to change"}]
    assert problem["detail"] == "body must name at least one field to change"
    assert stored(db, alice.id) == before


MODIFICATIONS: list[tuple[str, str, Fields | None]] = [
    ("PUT", "", {"title": "put"}),
    ("PATCH", "", {"description": "patched"}),
    ("PATCH", "", {"tags": ["x"]}),
    ("PATCH", "", {"due_date": "2032-01-01T00:00:00Z"}),
    ("PATCH", "/complete", {"completed": True}),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {}),
    ("PUT", "", {"title": "put again", "priority": "urgent"}),
]


def test_updated_at_changes_on_every_modification_and_created_at_never(alice: User, db: Engine) -> None:
    task = alice.create(title="original")
    assert task["updated_at"] == task["created_at"]
    previous = task
    for method, suffix, body in MODIFICATIONS:
        response = alice.http.request(method, f"/api/tasks/{task['id']}{suffix}", json=body)
        assert response.status_code == 200, (method, suffix, body, response.text)
        current = response.json()
        assert current["created_at"] == task["created_at"]
        assert instant(current["updated_at"]) > instant(previous["updated_at"]), (method, suffix, body)
        previous = current
    row = stored_task(db, task)
    assert row["created_at"] == instant(task["created_at"]) and row["updated_at"] == instant(previous["updated_at"])


@pytest.mark.parametrize(
    ("created", "change", "status"),
    [
        ({}, None, "incomplete"),
        ({"completed": True}, None, "complete"),
        ({"completed": True}, {"completed": False}, "incomplete"),
        ({}, {"completed": True}, "complete"),
        ({}, {"title": "still open"}, "incomplete"),
    ],
)
def test_status_is_derived_from_completed(alice: User, created: Fields, change: Fields | None, status: str) -> None:
    task = alice.create(**created)
    if change is not None:
        task = alice.http.patch(f"/api/tasks/{task['id']}", json=change).json()
    assert task["status"] == status and task["completed"] is (status == "complete")
    assert alice.http.get(f"/api/tasks/{task['id']}").json()["status"] == status
    assert [listed["status"] for listed in alice.http.get("/api/tasks").json()] == [status]


@pytest.mark.parametrize("initially", [False, True])
@pytest.mark.parametrize("value", [True, False])
def test_complete_with_a_value_sets_it_idempotently(alice: User, db: Engine, initially: bool, value: bool) -> None:
    task = alice.create(completed=initially)
    answers = [alice.http.patch(f"/api/tasks/{task['id']}/complete", json={"completed": value}) for _ in range(2)]
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["completed"] is value
        assert response.json()["status"] == ("complete" if value else "incomplete")
    first, again = answers
    assert again.json() == first.json() and again.headers["etag"] == first.headers["etag"]
    assert stored_task(db, task)["completed"] is value


NO_CHANGES: list[tuple[str, str, Fields]] = [
    ("PATCH", "/complete", {"completed": False}),
    ("PATCH", "", {"title": "  same  "}),
    ("PATCH", "", {"tags": ["Work", "work", " Work "]}),
    ("PATCH", "", {"due_date": "2030-01-01T01:00:00+01:00"}),
    ("PATCH", "", {"description": None, "priority": "medium", "completed": False}),
    ("PUT", "", {"title": "same"}),
]


def test_a_write_that_changes_nothing_keeps_the_etag_and_updated_at(alice: User, db: Engine) -> None:
    task = alice.create(title="same", tags=["Work"], due_date="2030-01-01T00:00:00Z")
    etag = alice.http.get(f"/api/tasks/{task['id']}").headers["etag"]
    for method, suffix, body in NO_CHANGES:
        response = alice.http.request(method, f"/api/tasks/{task['id']}{suffix}", json=body)
        assert response.status_code == 200, (method, suffix, body, response.text)
        assert response.json() == task, body
        assert response.headers["etag"] == etag, body
    assert stored_task(db, task)["updated_at"] == instant(task["updated_at"])


EMPTY_BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "no body, no content type": lambda: {},
    "no body, JSON content type": lambda: {"headers": {"Content-Type": "application/json"}},
    "chunked empty body, JSON content type": lambda: {
        "headers": {"Content-Type": "application/json"},
        "content": iter([b""]),
    },
    "empty JSON object": lambda: {"json": {}},
}


@pytest.mark.parametrize("empty_body", EMPTY_BODIES.values(), ids=EMPTY_BODIES.keys())
def test_complete_with_an_empty_body_toggles(alice: User, db: Engine, empty_body: Callable[[], dict[str, Any]]) -> None:
    task = alice.create()
    for expected in (True, False, True):
        response = alice.http.patch(f"/api/tasks/{task['id']}/complete", **empty_body())
        assert response.status_code == 200, response.text
        assert response.json()["completed"] is expected
        assert stored_task(db, task)["completed"] is expected


@pytest.mark.parametrize(
    ("body", "field"),
    [({"completed": "yes"}, "completed"), ({"completed": None}, "completed"), ({"done": True}, "done")],
)
def test_complete_with_an_invalid_body_is_422_and_changes_nothing(
    alice: User, db: Engine, body: Fields, field: str
) -> None:
    task = alice.create()
    assert_rejected(db, alice, lambda: alice.http.patch(f"/api/tasks/{task['id']}/complete", json=body), field)


OPERATIONS: dict[str, Callable[[httpx.Client, int], httpx.Response]] = {
    "POST": lambda http, _: http.post("/api/tasks", json=FULL),
    "GET": lambda http, task_id: http.get(f"/api/tasks/{task_id}"),
    "PUT": lambda http, task_id: http.put(f"/api/tasks/{task_id}", json=OTHER),
    "PATCH": lambda http, task_id: http.patch(f"/api/tasks/{task_id}", json={"priority": "low"}),
    "PATCH complete": lambda http, task_id: http.patch(f"/api/tasks/{task_id}/complete"),
    "list": lambda http, _: http.get("/api/tasks"),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_every_response_has_exactly_the_task_fields(
    alice: User, operation: Callable[[httpx.Client, int], httpx.Response]
) -> None:
    task = alice.create(**FULL)
    response = operation(alice.http, task["id"])
    assert response.status_code in (200, 201), response.text
    body = response.json()
    for item in body if isinstance(body, list) else [body]:
        assert set(item) == TASK_FIELDS


UNICODE: Fields = {
    "title": "🙂 שלום עולם — Zoë e\u0301 ﷺ",
    "description": "مرحبا \u200f(RTL)\u200f 👩\u200d👩\u200d👧 a\u0308\u0301\u0323 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u202eevil\u202c",
    "tags": ["🏷️", "עברית", "e\u0301", "Ωmega"],
}


@pytest.mark.parametrize("method", WRITES)
def test_unicode_round_trips_byte_for_byte(alice: User, db: Engine, method: str) -> None:
    response = write(alice, method, UNICODE)
    assert response.status_code in (200, 201), response.text
    task = response.json()
    fetched = alice.http.get(f"/api/tasks/{task['id']}").json()
    row = stored_task(db, task)
    for name, sent in UNICODE.items():
        assert task[name] == fetched[name] == row[name] == sent
    assert row["title"].encode() == UNICODE["title"].encode()
    assert [tag.encode() for tag in row["tags"]] == [tag.encode() for tag in UNICODE["tags"]]


def test_timestamps_are_returned_in_utc_with_z(alice: User) -> None:
    task = alice.create(due_date="2030-01-31T17:00:00+09:00")
    for name in ("created_at", "updated_at", "due_date"):
        assert task[name].endswith("Z"), task[name]
    assert instant(task["due_date"]) == datetime(2030, 1, 31, 8, tzinfo=UTC)
