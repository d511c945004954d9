"""Each application keeps its own configuration and pool: two built in one process (as a test
runner, an embedding host or `todo-api check` next to a running app would) never see each
other's secret, limits or connections."""

from __future__ import annotations

import secrets
import uuid

from starlette.testclient import TestClient

from tests.support.service import service_env
from tests.support.tokens import mint
from todo_api.app import create_app
from todo_api.settings import load

OTHER_SECRET = "another-" + secrets.token_urlsafe(32)


def test_two_apps_in_one_process_keep_their_own_secret_and_limits(database_url: str) -> None:
    first = create_app(load(service_env(database_url, MAX_TASKS_PER_USER="1")))
    second = create_app(load(service_env(database_url, BETTER_AUTH_SECRET=OTHER_SECRET)))
    user = f"state-{uuid.uuid4().hex}"
    with TestClient(first) as one, TestClient(second) as two:
        first_token = {"Authorization": f"Bearer {mint(user)}"}
        second_token = {"Authorization": f"Bearer {mint(user, secret=OTHER_SECRET)}"}
        assert one.get("/api/tasks", headers=first_token).status_code == 200
        assert two.get("/api/tasks", headers=first_token).status_code == 401
        assert one.get("/api/tasks", headers=second_token).status_code == 401
        assert two.get("/api/tasks", headers=second_token).status_code == 200

        assert one.post("/api/tasks", json={"title": "one"}, headers=first_token).status_code == 201
        assert one.post("/api/tasks", json={"title": "two"}, headers=first_token).status_code == 409  # its cap: 1
        assert two.post("/api/tasks", json={"title": "two"}, headers=second_token).status_code == 201
