"""Create, read, replace, update, complete and delete a task — through both route forms."""

from __future__ import annotations

import pytest

from tests.support import TASK_FIELDS
from tests.support.problems import assert_problem
from tests.support.users import User


def test_create_returns_the_task_with_location_and_etag(alice: User) -> None:
    response = alice.http.post("/api/tasks", json={"title": "  Buy milk  ", "description": "2 litres"})
    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert task["title"] == "Buy milk"
    assert task["user_id"] == alice.id
    assert task["completed"] is False and task["status"] == "incomplete"
    assert task["priority"] == "medium" and task["tags"] == [] and task["due_date"] is None
    assert task["created_at"].endswith("Z") and task["created_at"] == task["updated_at"]
    assert response.headers["location"] == f"/api/tasks/{task['id']}"
    assert response.headers["etag"]
    fetched = alice.http.get(response.headers["location"])
    assert fetched.status_code == 200 and fetched.json() == task
    assert fetched.headers["etag"] == response.headers["etag"]


@pytest.mark.parametrize("base", ["/api/tasks", "/api/{user}/tasks"], ids=["primary", "compatibility"])
def test_a_task_is_created_read_replaced_updated_completed_and_deleted(alice: User, base: str) -> None:
    tasks = base.format(user=alice.id)
    created = alice.http.post(tasks, json={"title": "draft", "tags": ["home"]})
    assert created.status_code == 201, created.text
    path = f"{tasks}/{created.json()['id']}"
    assert alice.http.get(path).json() == created.json()
    assert alice.http.get(tasks).json() == [created.json()]

    replaced = alice.http.put(path, json={"title": "final"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["title"] == "final" and replaced.json()["tags"] == ["home"]  # left out: kept
    updated = alice.http.patch(path, json={"priority": "high"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["priority"] == "high" and updated.json()["title"] == "final"
    toggled = alice.http.patch(f"{path}/complete")
    assert toggled.status_code == 200, toggled.text
    assert toggled.json()["completed"] is True and toggled.json()["status"] == "complete"
    reopened = alice.http.patch(f"{path}/complete", json={"completed": False})
    assert reopened.status_code == 200 and reopened.json()["status"] == "incomplete"
    assert alice.http.get(path).json() == reopened.json()

    deleted = alice.http.delete(path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(alice.http.get(path), 404)
    assert alice.http.get(tasks).json() == []


def test_empty_list_is_an_empty_array(alice: User) -> None:
    response = alice.http.get("/api/tasks")
    assert response.status_code == 200 and response.json() == []


@pytest.mark.parametrize("base", ["/api/tasks", "/api/{user}/tasks"], ids=["primary", "compatibility"])
def test_if_none_match_naming_the_current_etag_is_304_without_a_body(alice: User, base: str) -> None:
    path = f"{base.format(user=alice.id)}/{alice.create(title='cached')['id']}"
    etag = alice.http.get(path).headers["etag"]
    for header in [etag, f"W/{etag}", f'"v999", {etag}', "*"]:
        response = alice.http.get(path, headers={"If-None-Match": header})
        assert response.status_code == 304, (header, response.text)
        assert response.content == b"" and response.headers["etag"] == etag
    assert alice.http.get(path, headers={"If-None-Match": '"v999"'}).json()["title"] == "cached"
    alice.http.patch(path, json={"title": "changed"})
    response = alice.http.get(path, headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.json()["title"] == "changed"
    assert response.headers["etag"] != etag


def test_if_none_match_reveals_nothing_of_another_users_task(alice: User, bob: User) -> None:
    task = bob.create(title="bob's")
    etag = bob.http.get(f"/api/tasks/{task['id']}").headers["etag"]
    for header in ["*", etag]:
        assert_problem(alice.http.get(f"/api/tasks/{task['id']}", headers={"If-None-Match": header}), 404)
