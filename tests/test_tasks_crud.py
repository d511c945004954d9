"""Create, read, replace, update, complete and delete a task — through both route forms."""

from __future__ import annotations

import pytest

from tests.conftest import TASK_FIELDS, User, assert_problem


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
