"""Every failure openapi.yaml declares is an RFC 9457 problem, and a refused write stores nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import SERVER_FIELDS
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.tokens import SECRET, mint
from tests.support.users import User

UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/nothing"
# What must never reach a client: stack traces, SQL, driver names, the secret, connection strings.
LEAKS = (
    "Traceback",
    'File "',
    "psycopg",
    "sqlalchemy",
    "SELECT ",
    "INSERT INTO",
    "UPDATE tasks",
    "DELETE FROM",
    "postgresql://",
    "127.0.0.1:1",
    SECRET,
)
MAX_BODY_BYTES = 64 * 1024
JSON = {"Content-Type": "application/json"}
WRITES = ["POST /api/tasks", "PUT /api/tasks/{id}", "PATCH /api/tasks/{id}"]
OPERATIONS = {
    "get": ("GET", "/api/tasks/{id}", None),
    "put": ("PUT", "/api/tasks/{id}", {"title": "new"}),
    "patch": ("PATCH", "/api/tasks/{id}", {"title": "new"}),
    "delete": ("DELETE", "/api/tasks/{id}", None),
    "complete": ("PATCH", "/api/tasks/{id}/complete", {"completed": True}),
}
# Each operation that changes a task, as the one request a stale or concurrent writer sends.
CHANGES = {name: OPERATIONS[name] for name in ("put", "patch", "delete", "complete")} | {
    "toggle": ("PATCH", "/api/tasks/{id}/complete", None)
}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is a problem with `status` that leaks nothing of the server's insides."""
    body = assert_problem(response, status)
    for leak in LEAKS:
        assert leak not in response.text, f"{leak!r} leaked in {response.text}"
    return body


def invalid(response: httpx.Response, field: str | None = None) -> list[dict[str, str]]:
    """`response` is a 422 whose `errors` are `{field, message}` entries, one of them for `field`."""
    errors = problem(response, 422)["errors"]
    assert errors, "a 422 lists what is wrong"
    for error in errors:
        assert set(error) == {"field", "message"}
        assert isinstance(error["field"], str) and isinstance(error["message"], str) and error["message"]
    if field is not None:
        named = {error["field"] for error in errors}
        assert field in named or any(name.startswith(f"{field}.") for name in named), errors
    return errors


def stored(db: Engine, user: User) -> list[dict[str, Any]]:
    """Every column of every task the user has, straight from the database."""
    with db.connect() as connection:
        rows = connection.execute(text("SELECT * FROM tasks WHERE user_id = :user ORDER BY id"), {"user": user.id})
        return [dict(row) for row in rows.mappings()]


@contextmanager
def stores_nothing(db: Engine, user: User) -> Iterator[None]:
    """The block leaves every stored column of every task of `user` as it was."""
    before = stored(db, user)
    yield
    assert stored(db, user) == before


def send(user: User, route: str, task_id: int, **kwargs: Any) -> httpx.Response:
    method, path = route.split()
    return user.http.request(method, path.format(id=task_id), **kwargs)


@pytest.fixture
def task(alice: User) -> dict[str, Any]:
    return alice.create(title="original", description="kept", tags=["home"])


# 400


@pytest.mark.parametrize("route", WRITES)
@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": ',
        b'{"title": "x",}',
        b"{'title': 'x'}",
        b'{"title": "x"} trailing',
        b'{"title": "x", "completed": NaN}',
        b'{"title": "caf\xe9"}',
        b'\xff\xfe{"title": "x"}',
        '{"title": "x"}'.encode("utf-16"),
    ],
    ids=["truncated", "trailing-comma", "single-quotes", "trailing-text", "nan", "latin-1", "bad-bytes", "utf-16"],
)
def test_a_body_that_is_not_utf8_json_is_400_and_stores_nothing(
    alice: User, task: dict[str, Any], db: Engine, route: str, raw: bytes
) -> None:
    with stores_nothing(db, alice):
        problem(send(alice, route, task["id"], content=raw, headers=JSON), 400)


def _next_cursor(user: User, **params: Any) -> str:
    response = user.http.get("/api/tasks", params={"limit": 1, **params})
    assert response.status_code == 200, response.text
    link = response.headers["link"]
    assert link.endswith('rel="next"')
    return httpx.URL(link[link.index("<") + 1 : link.index(">")]).params["cursor"]


@pytest.fixture
def two_pages(alice: User) -> None:
    alice.create(title="first")
    alice.create(title="second")


@pytest.mark.usefixtures("two_pages")
@pytest.mark.parametrize(
    ("made_with", "alias"),
    [
        ({"q": "s"}, {"search": "s"}),
        ({"status": "incomplete"}, {"status": "active"}),
        ({"completed": "false"}, {"status": "pending"}),
        ({"sort": "title"}, {"sort_by": "title"}),
        ({"sort": "-updated_at"}, {"sort_by": "updated", "sort_order": "desc"}),
    ],
)
def test_a_cursor_works_again_with_the_same_query_or_an_alias_of_it(
    alice: User, made_with: dict[str, str], alias: dict[str, str]
) -> None:
    cursor = _next_cursor(alice, **made_with)
    for params in (made_with, alias):
        response = alice.http.get("/api/tasks", params={"limit": 1, "cursor": cursor, **params})
        assert response.status_code == 200, response.text
        assert len(response.json()) == 1


@pytest.mark.usefixtures("two_pages")
@pytest.mark.parametrize(
    "other",
    [
        {"q": "x"},
        {"status": "complete"},
        {"completed": "false"},
        {"sort": "title"},
        {"sort": "created_at"},
        {"priority": "high"},
        {"tag": "home"},
    ],
)
def test_a_cursor_reused_with_other_filters_or_sort_is_400(alice: User, other: dict[str, str]) -> None:
    cursor = _next_cursor(alice)
    problem(alice.http.get("/api/tasks", params={"limit": 1, "cursor": cursor, **other}), 400)


@pytest.mark.usefixtures("two_pages")
def test_another_users_cursor_is_400(alice: User, bob: User) -> None:
    bob.create(title="bob's")
    cursor = _next_cursor(alice)
    problem(bob.http.get("/api/tasks", params={"limit": 1, "cursor": cursor}), 400)
    problem(bob.http.get(f"/api/{bob.id}/tasks", params={"limit": 1, "cursor": cursor}), 400)


@pytest.mark.usefixtures("two_pages")
@pytest.mark.parametrize(
    "tamper",
    [
        lambda cursor: cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB"),
        lambda cursor: ("B" if cursor[0] != "B" else "C") + cursor[1:],
        lambda cursor: cursor[:10],
        lambda _: "not a cursor!",
        lambda _: "AAAA",
    ],
    ids=["payload-changed", "signature-changed", "truncated", "not-base64", "empty-payload"],
)
def test_a_tampered_or_made_up_cursor_is_400(alice: User, tamper: Callable[[str], str]) -> None:
    cursor = tamper(_next_cursor(alice))
    problem(alice.http.get("/api/tasks", params={"limit": 1, "cursor": cursor}), 400)


# 401, 403


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-jwt",
        f"Bearer {mint('user-unsigned', secret='another-secret-' + 'y' * 40)}",
        f"Bearer {mint('user-unsigned', ttl=-120)}",
    ],
    ids=["missing", "malformed", "wrongly-signed", "expired"],
)
def test_a_write_without_a_valid_token_is_401_and_stores_nothing(
    service: Service, db: Engine, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    problem(httpx.post(service.base_url + "/api/tasks", json={"title": "x"}, headers=headers), 401)
    with db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM users WHERE id = 'user-unsigned'")) == 0


@pytest.mark.parametrize("path_user", ["other", "nobody"])
def test_a_path_user_that_is_not_the_caller_is_403(alice: User, bob: User, path_user: str) -> None:
    user_id = bob.id if path_user == "other" else "user-that-never-existed"
    problem(alice.http.get(f"/api/{user_id}/tasks"), 403)


# 404


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("task_id", [str(2**63 - 1), "abc", "1.5", "1e3", "0x1", "0", "-1", str(2**63), str(10**30)])
def test_an_unknown_non_integer_or_out_of_range_id_is_404(alice: User, operation: str, task_id: str) -> None:
    method, path, body = OPERATIONS[operation]
    problem(alice.http.request(method, path.format(id=task_id), json=body), 404)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_deleted_task_is_404(alice: User, task: dict[str, Any], operation: str) -> None:
    assert alice.http.delete(f"/api/tasks/{task['id']}").status_code == 204
    method, path, body = OPERATIONS[operation]
    problem(alice.http.request(method, path.format(id=task["id"]), json=body), 404)


# 405


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/tasks", "GET, HEAD, POST"),
        ("DELETE", "/api/tasks", "GET, HEAD, POST"),
        ("OPTIONS", "/api/tasks", "GET, HEAD, POST"),
        ("POST", "/api/tasks/1", "GET, HEAD, PUT, PATCH, DELETE"),
        ("GET", "/api/tasks/1/complete", "PATCH"),
        ("PUT", "/api/{user}/tasks", "GET, HEAD, POST"),
        ("POST", "/api/{user}/tasks/1", "GET, HEAD, PUT, PATCH, DELETE"),
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/api/tasks/changes", "GET, HEAD"),  # not /api/tasks/{id}'s methods
        ("DELETE", "/api/{user}/tasks/changes", "GET, HEAD"),
    ],
)
def test_a_method_the_resource_lacks_is_405_with_a_correct_allow(
    alice: User, method: str, path: str, allowed: str
) -> None:
    path = path.format(user=alice.id)
    response = alice.http.request(method, path)
    problem(response, 405)
    listed = {name.strip() for name in response.headers["allow"].split(",")}
    assert listed == set(allowed.split(", "))
    for name in listed:
        assert alice.http.request(name, path).status_code != 405, f"Allow lists {name} for {path}"


# 412


@pytest.fixture
def changed_task(alice: User, task: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """Alice's task after one change: `(task, stale ETag, current ETag)`."""
    path = f"/api/tasks/{task['id']}"
    stale = alice.http.get(path).headers["etag"]
    changed = alice.http.patch(path, json={"description": "changed"})
    assert changed.status_code == 200 and changed.headers["etag"] != stale
    return changed.json(), stale, changed.headers["etag"]


def _if_match(template: str, *, stale: str, current: str) -> bytes:
    """`template` with `{stale}`, `{current}` and `{altered}` (the current tag with a 0 slipped in) filled in."""
    altered = current[:2] + "0" + current[2:]
    return template.format(stale=stale, current=current, altered=altered).encode("latin-1")


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize(
    "if_match",
    ["{stale}", "W/{current}", '"v999", {stale}', "{stale},{stale}", "{altered}", '"v\u00b2"', '"v1' + "0" * 30 + '"'],
    ids=["stale", "weak", "list", "repeated", "altered", "superscript-digit", "huge"],
)
def test_an_if_match_without_the_current_etag_is_412_and_changes_nothing(
    alice: User, db: Engine, changed_task: tuple[dict[str, Any], str, str], change: str, if_match: str
) -> None:
    task, stale, current = changed_task
    method, path, body = CHANGES[change]
    header = _if_match(if_match, stale=stale, current=current)
    with stores_nothing(db, alice):
        problem(alice.http.request(method, path.format(id=task["id"]), json=body, headers={"If-Match": header}), 412)
    assert alice.http.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize(
    "if_match", ["*", "{current}", "{stale}, {current}", '"v999",{current}', "{stale} ,\t{current}"]
)
def test_an_if_match_of_star_or_a_list_holding_the_current_etag_lets_the_write_through(
    alice: User, changed_task: tuple[dict[str, Any], str, str], change: str, if_match: str
) -> None:
    task, stale, current = changed_task
    method, path, body = CHANGES[change]
    header = _if_match(if_match, stale=stale, current=current)
    response = alice.http.request(method, path.format(id=task["id"]), json=body, headers={"If-Match": header})
    assert response.status_code == (204 if method == "DELETE" else 200), response.text
    if method != "DELETE":
        assert response.headers["etag"] != current


@pytest.mark.parametrize("change", ["put", "patch", "toggle"])
def test_of_concurrent_writers_holding_the_same_etag_exactly_one_wins(
    service: Service, alice: User, db: Engine, task: dict[str, Any], change: str
) -> None:
    writers = 8
    method, path, _ = CHANGES[change]
    path = path.format(id=task["id"])
    etag = alice.http.get(path.removesuffix("/complete")).headers["etag"]
    barrier = threading.Barrier(writers)

    def write(writer: int) -> httpx.Response:
        body = None if change == "toggle" else {"title": f"writer {writer}"}
        with httpx.Client(base_url=service.base_url, headers=alice.http.headers, timeout=30) as http:
            http.get("/health")  # connect before the race starts
            barrier.wait()
            return http.request(method, path, json=body, headers={"If-Match": etag})

    with ThreadPoolExecutor(writers) as pool:
        responses = list(pool.map(write, range(writers)))
    assert sorted(response.status_code for response in responses) == [200] + [412] * (writers - 1)
    for response in responses:
        if response.status_code == 412:
            problem(response, 412)
    winner = next(response for response in responses if response.status_code == 200)
    assert alice.http.get(f"/api/tasks/{task['id']}").json() == winner.json()
    (row,) = stored(db, alice)
    assert row["title"] == winner.json()["title"] and row["completed"] == winner.json()["completed"]


# 413


def _body_of(size: int) -> bytes:
    """A valid task body of exactly `size` bytes: the longest description, padded with JSON white space."""
    core = json.dumps({"title": "big", "description": "d" * 5000}).encode()
    assert size >= len(core)
    return core[:-1] + b" " * (size - len(core)) + b"}"


def _chunked(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_accepted(alice: User, db: Engine, chunked: bool) -> None:
    body = _body_of(MAX_BODY_BYTES)
    response = alice.http.post("/api/tasks", content=_chunked(body) if chunked else body, headers=JSON)
    assert response.status_code == 201, response.text
    assert [row["description"] for row in stored(db, alice)] == ["d" * 5000]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 16 * MAX_BODY_BYTES])
def test_a_body_over_the_limit_is_413_and_stores_nothing(alice: User, db: Engine, chunked: bool, size: int) -> None:
    body = _body_of(size)
    response = alice.http.post("/api/tasks", content=_chunked(body) if chunked else body, headers=JSON)
    problem(response, 413)
    assert stored(db, alice) == []


# 415


@pytest.mark.parametrize("route", [*WRITES, "PATCH /api/tasks/{id}/complete"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
def test_a_body_that_is_not_application_json_is_415_and_stores_nothing(
    alice: User, task: dict[str, Any], db: Engine, route: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with stores_nothing(db, alice):
        problem(send(alice, route, task["id"], content=b'{"title": "x", "completed": true}', headers=headers), 415)


# 422


def refused_as_invalid(user: User, db: Engine, route: str, task_id: int, raw: str, field: str | None) -> None:
    """`raw` sent to `route` is a 422 naming `field`, and nothing is stored."""
    with stores_nothing(db, user):
        invalid(send(user, route, task_id, content=raw.encode(), headers=JSON), field)


@pytest.mark.parametrize("route", WRITES)
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"title": "x", "user_id": "someone-else"}', "user_id"),
        ('{"title": "x", "id": 1}', "id"),
        ('{"title": "x", "created_at": "2030-01-01T00:00:00Z"}', "created_at"),
        ('{"title": "x", "status": "complete"}', "status"),
        ('{"title": "x", "colour": "red"}', "colour"),
        ('{"title": ""}', "title"),
        ('{"title": "   \\t\\n "}', "title"),
        (json.dumps({"title": "a" * 256}), "title"),
        (json.dumps({"title": " " + "a" * 256 + " "}), "title"),
        (json.dumps({"title": "x", "description": "d" * 5001}), "description"),
        ('{"title": "a\\u0000b"}', "title"),
        ('{"title": "a\\ud800b"}', "title"),
        ('{"title": "\\udc00"}', "title"),
        ('{"title": "x", "description": "a\\u0000b"}', "description"),
        ('{"title": "x", "description": "a\\ud800b"}', "description"),
        ('{"title": "x", "tags": ["a\\u0000b"]}', "tags.0"),
        ('{"title": "x", "tags": ["ok", "\\ud800"]}', "tags.1"),
        ('{"title": 5}', "title"),
        ('{"title": null}', "title"),
        ('{"title": ["x"]}', "title"),
        ('{"title": "x", "description": 5}', "description"),
        ('{"title": "x", "completed": "yes"}', "completed"),
        ('{"title": "x", "completed": 1}', "completed"),
        ('{"title": "x", "completed": null}', "completed"),
        ('{"title": "x", "priority": "critical"}', "priority"),
        ('{"title": "x", "priority": "HIGH"}', "priority"),
        ('{"title": "x", "tags": "home"}', "tags"),
        ('{"title": "x", "tags": [1]}', "tags.0"),
        (json.dumps({"title": "x", "tags": [f"t{n}" for n in range(11)]}), "tags"),
        (json.dumps({"title": "x", "tags": ["a" * 33]}), "tags.0"),
        ('{"title": "x", "tags": ["  "]}', "tags.0"),
        ('{"title": "x", "due_date": "tomorrow"}', "due_date"),
        ('{"title": "x", "due_date": "2030-01-31"}', "due_date"),
        ('{"title": "x", "due_date": "2030-01-31T17:00:00"}', "due_date"),
        ('{"title": "x", "due_date": "2030-02-30T17:00:00Z"}', "due_date"),
        ('{"title": "x", "due_date": 1893456000}', "due_date"),
        ('{"title": "x", "due_date": "9999-12-31T23:59:59-01:00"}', "due_date"),
        ('{"title": "x", "due_date": "0001-01-01T00:30:00+01:00"}', "due_date"),
        ("[]", None),
        ('"title"', None),
        ("null", None),
    ],
)
def test_a_schema_violation_is_422_naming_the_field_and_stores_nothing(
    alice: User, task: dict[str, Any], db: Engine, route: str, raw: str, field: str | None
) -> None:
    refused_as_invalid(alice, db, route, task["id"], raw, field)


@pytest.mark.parametrize("route", WRITES)
def test_a_field_the_server_sets_is_refused_as_such_and_an_unknown_one_as_unknown(
    alice: User, task: dict[str, Any], db: Engine, route: str
) -> None:
    """Which fields are the server's comes from the contract (readOnly); the message says which kind."""
    assert {"id", "user_id", "created_at", "updated_at"} <= SERVER_FIELDS
    sent = {"title": "x", **{name: task[name] for name in SERVER_FIELDS}, "colour": "red"}
    with stores_nothing(db, alice):
        errors = invalid(send(alice, route, task["id"], content=json.dumps(sent).encode(), headers=JSON))
    expected = [{"field": name, "message": "is set by the server; leave it out"} for name in SERVER_FIELDS]
    expected.append({"field": "colour", "message": "is not a known field; leave it out"})
    assert sorted(errors, key=lambda error: error["field"]) == sorted(expected, key=lambda error: error["field"])


@pytest.mark.parametrize(
    ("route", "raw", "field"),
    [
        ("POST /api/tasks", "{}", "title"),
        ("POST /api/tasks", '{"description": "no title"}', "title"),
        ("PUT /api/tasks/{id}", "{}", "title"),
        ("PUT /api/tasks/{id}", '{"description": "no title", "completed": true}', "title"),
        ("PATCH /api/tasks/{id}", "{}", None),
        ("PATCH /api/tasks/{id}/complete", '{"completed": "yes"}', "completed"),
        ("PATCH /api/tasks/{id}/complete", '{"completed": true, "title": "x"}', "title"),
    ],
)
def test_a_body_missing_what_its_operation_requires_is_422_and_stores_nothing(
    alice: User, task: dict[str, Any], db: Engine, route: str, raw: str, field: str | None
) -> None:
    refused_as_invalid(alice, db, route, task["id"], raw, field)


@pytest.mark.parametrize(
    ("fields", "column", "value"),
    [
        ({"title": "  " + "a" * 255 + "\t"}, "title", "a" * 255),
        ({"title": "x", "description": "d" * 5000}, "description", "d" * 5000),
        ({"title": "x", "tags": [f"t{n}" for n in range(10)]}, "tags", [f"t{n}" for n in range(10)]),
        ({"title": "x", "tags": [" " + "a" * 32 + " "]}, "tags", ["a" * 32]),
        ({"title": "x", "description": "emoji 🙂 and \u00e9"}, "description", "emoji 🙂 and \u00e9"),
    ],
    ids=["title-255", "description-5000", "tags-10", "tag-32", "astral"],
)
def test_values_at_the_limits_are_accepted(
    alice: User, db: Engine, fields: dict[str, Any], column: str, value: Any
) -> None:
    response = alice.http.post("/api/tasks", json=fields)
    assert response.status_code == 201, response.text
    assert response.json()[column] == value
    assert [row[column] for row in stored(db, alice)] == [value]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "done"}, "status"),
        ({"completed": "maybe"}, "completed"),
        ({"sort": "size"}, "sort"),
        ({"priority": "critical"}, "priority"),
        ({"due_before": "tomorrow"}, "due_before"),
        ({"q": "a\x00b"}, "q"),
        ({"colour": "red"}, "colour"),
        ({"q": "milk", "search": "bread"}, "search"),
        ({"status": "complete", "completed": "false"}, "completed"),
    ],
)
def test_an_invalid_query_is_422_naming_the_parameter(alice: User, params: dict[str, str], field: str) -> None:
    invalid(alice.http.get("/api/tasks", params=params), field)


# 503


@pytest.fixture(scope="module")
def without_database(start_module_service: Callable[..., Service]) -> Service:
    """A service whose database cannot be reached; it must start anyway."""
    return start_module_service(DATABASE_URL=UNREACHABLE_DATABASE)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/tasks", None),
        ("POST", "/api/tasks", {"title": "x"}),
        ("GET", "/api/tasks/1", None),
        ("PATCH", "/api/tasks/1", {"title": "x"}),
        ("DELETE", "/api/tasks/1", None),
        ("GET", "/ready", None),
    ],
)
def test_an_unreachable_database_is_a_prompt_503_with_retry_after(
    without_database: Service, method: str, path: str, body: dict[str, Any] | None
) -> None:
    headers = {"Authorization": f"Bearer {mint('user-without-database')}"}
    started = time.monotonic()
    response = httpx.request(method, without_database.base_url + path, json=body, headers=headers, timeout=20)
    assert time.monotonic() - started < 10
    problem(response, 503)
    assert response.headers["retry-after"].isdigit()
    assert httpx.get(without_database.base_url + "/health").status_code == 200
    assert without_database.process.poll() is None
