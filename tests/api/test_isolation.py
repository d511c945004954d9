"""A user sees and changes only their own tasks, through either route form, and learns nothing of others'."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.sync import EventStream
from tests.support.users import User, task_count

FORMS = {"primary": "/api/tasks", "compat": "/api/{user}/tasks"}
OPERATIONS = {
    "get": ("GET", "/{id}", None),
    "put": ("PUT", "/{id}", {"title": "taken over", "description": None, "completed": True}),
    "patch": ("PATCH", "/{id}", {"title": "taken over"}),
    "delete": ("DELETE", "/{id}", None),
    "complete": ("PATCH", "/{id}/complete", {"completed": True}),
    "toggle": ("PATCH", "/{id}/complete", None),
}
ROUTES = {
    "list": ("GET", "", None),
    "create": ("POST", "", {"title": "planted"}),
    "changes": ("GET", "/changes", None),
    "events": ("GET", "/events", None),
    **OPERATIONS,
}


def url(form: str, path_user: str, suffix: str = "", task_id: int | None = None) -> str:
    return FORMS[form].format(user=path_user) + suffix.format(id=task_id)


def row(db: Engine, task_id: int) -> dict[str, Any] | None:
    with db.connect() as connection:
        found = connection.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": task_id}).mappings().first()
        return None if found is None else dict(found)


def snapshot(owner: User, db: Engine, task_id: int) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """The task as its owner and the database see it: `(body, ETag, row)`."""
    response = owner.http.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json(), response.headers["etag"], row(db, task_id)


def leaks_nothing_of(response: httpx.Response, owner: User, task: dict[str, Any]) -> None:
    assert owner.id not in response.text and task["title"] not in response.text


@pytest.fixture
def alices_task(alice: User) -> dict[str, Any]:
    return alice.create(title="alice's secret plan", description="for alice only")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("if_match", [None, "*", "owner's"])
def test_another_users_task_is_404_and_stays_unchanged(
    alice: User, bob: User, db: Engine, alices_task: dict[str, Any], form: str, operation: str, if_match: str | None
) -> None:
    bob.create(title="bob's own")
    before = snapshot(alice, db, alices_task["id"])
    method, suffix, body = OPERATIONS[operation]
    headers = {"If-Match": before[1] if if_match == "owner's" else if_match} if if_match else {}
    response = bob.http.request(method, url(form, bob.id, suffix, alices_task["id"]), json=body, headers=headers)
    assert_problem(response, 404)
    leaks_nothing_of(response, alice, alices_task)
    assert snapshot(alice, db, alices_task["id"]) == before


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("params", [{}, {"status": "all", "limit": "500"}, {"q": "alice's secret"}, {"sort": "title"}])
def test_a_users_list_never_contains_another_users_tasks(
    alice: User, bob: User, alices_task: dict[str, Any], form: str, params: dict[str, str]
) -> None:
    alice.create(title="alice's second")
    bobs = bob.create(title="bob's own")
    listed = bob.http.get(url(form, bob.id), params=params)
    assert listed.status_code == 200, listed.text
    assert all(task["user_id"] == bob.id for task in listed.json())
    assert alices_task["id"] not in {task["id"] for task in listed.json()}
    if "q" not in params:
        assert [task["id"] for task in listed.json()] == [bobs["id"]]


@pytest.mark.parametrize("form", FORMS)
def test_a_users_feed_and_stream_never_carry_another_users_changes(
    alice: User, bob: User, service: Service, alices_task: dict[str, Any], form: str
) -> None:
    with EventStream(service.base_url, bob.token, url(form, bob.id, "/events")) as stream:
        alice.http.patch(f"/api/tasks/{alices_task['id']}", json={"title": "alice's plan, changed"})
        assert alice.http.delete(f"/api/tasks/{alices_task['id']}").status_code == 204
        bobs = bob.create(title="bob's own")
        event = stream.next()
        assert event is not None and event.data == {"type": "upsert", "task": bobs}  # the first event is bob's
    feed = bob.http.get(url(form, bob.id, "/changes"))
    assert feed.status_code == 200, feed.text
    assert feed.json()["changes"] == [{"type": "upsert", "task": bobs}]
    leaks_nothing_of(feed, alice, alices_task)


@pytest.mark.parametrize("path_user", ["owner", "stranger"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_path_user_other_than_the_caller_is_403_on_every_route(
    alice: User, bob: User, db: Engine, alices_task: dict[str, Any], route: str, path_user: str
) -> None:
    before = snapshot(alice, db, alices_task["id"])
    method, suffix, body = ROUTES[route]
    user_id = alice.id if path_user == "owner" else "user-nobody-has"
    for task_id in (alices_task["id"], 2**63 - 1):  # a task that exists for the path user, and one that does not
        response = bob.http.request(method, url("compat", user_id, suffix, task_id), json=body)
        assert_problem(response, 403)
        leaks_nothing_of(response, alice, alices_task)
    assert snapshot(alice, db, alices_task["id"]) == before
    assert task_count(db, alice) == 1 and task_count(db, bob) == 0


@pytest.mark.parametrize(("written_through", "read_through"), [("primary", "compat"), ("compat", "primary")])
def test_both_forms_are_one_resource(alice: User, written_through: str, read_through: str) -> None:
    created = alice.http.post(url(written_through, alice.id), json={"title": "shared", "tags": ["x"]})
    assert created.status_code == 201, created.text
    task = created.json()
    for location in (created.headers["location"], url(read_through, alice.id, "/{id}", task["id"])):
        fetched = alice.http.get(location)
        assert fetched.status_code == 200 and fetched.json() == task
        assert fetched.headers["etag"] == created.headers["etag"]
    assert [listed["id"] for listed in alice.http.get(url(read_through, alice.id)).json()] == [task["id"]]

    changed = alice.http.patch(
        url(read_through, alice.id, "/{id}", task["id"]),
        json={"description": "changed"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    fetched = alice.http.get(url(written_through, alice.id, "/{id}", task["id"]))
    assert fetched.json() == changed.json() and fetched.headers["etag"] == changed.headers["etag"]
    stale = alice.http.patch(
        url(written_through, alice.id, "/{id}", task["id"]),
        json={"title": "late"},
        headers={"If-Match": created.headers["etag"]},
    )
    assert_problem(stale, 412)

    assert alice.http.delete(url(read_through, alice.id, "/{id}", task["id"])).status_code == 204
    assert_problem(alice.http.get(url(written_through, alice.id, "/{id}", task["id"])), 404)


@pytest.mark.parametrize(
    ("method", "suffix", "raw"),
    [
        ("POST", "", b'{"title": "x", "user_id": "someone"}'),
        ("POST", "", b'{"title": '),
        ("PATCH", "/{id}", b'{"priority": "critical"}'),
        ("GET", "/{id}", None),
        ("DELETE", "/{id}", None),
    ],
)
def test_both_forms_refuse_alike(alice: User, method: str, suffix: str, raw: bytes | None) -> None:
    missing = 2**63 - 1
    headers = {"Content-Type": "application/json"} if raw else {}
    primary, compat = (
        alice.http.request(method, url(form, alice.id, suffix, missing), content=raw, headers=headers) for form in FORMS
    )
    assert primary.status_code >= 400
    assert (compat.status_code, compat.json()) == (primary.status_code, primary.json())
