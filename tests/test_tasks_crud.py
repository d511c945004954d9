"""Create, read, replace, update, complete and delete a task — through both route forms."""

from __future__ import annotations

from tests.conftest import TASK_FIELDS, User


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
