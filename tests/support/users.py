"""A fresh user of a running service, with a client that sends their token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import TLS
from tests.support.tokens import mint


class User:
    """A fresh user, with a client that sends their token."""

    def __init__(self, base_url: str) -> None:
        self.id = f"user-{uuid.uuid4().hex[:12]}"
        self.token = mint(self.id, email=f"{self.id}@example.com", name="Test User")
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30, verify=TLS
        )

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/api/tasks", json={"title": "a task", **fields})
        assert response.status_code == 201, response.text
        return response.json()


def still_serving(user: User) -> None:
    """The service still answers `user`, and still stores what they create."""
    assert user.http.get("/health").status_code == 200
    assert user.create(title="still here")["title"] == "still here"


def task_count(db: Engine, user: User) -> int:
    """How many tasks `user` has in the database."""
    with db.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM tasks WHERE user_id = :id"), {"id": user.id}) or 0
