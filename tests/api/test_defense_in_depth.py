"""Isolation holds a second time inside PostgreSQL, the service's role can only touch rows, and a
retried create (same Idempotency-Key) creates nothing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from persistence import database
from tests.support.problems import assert_problem
from tests.support.users import User, task_count


def _as_service(database_url: str, user_id: str | None, *statements: str) -> list[dict[str, Any]]:
    """Run raw SQL through the service's own transaction for `user_id` — no WHERE of ours —
    and return the rows of the last statement."""

    async def run() -> list[dict[str, Any]]:
        db = database.Database(database_url, pool_size=1)
        await db.open()
        try:
            async with db.transaction(user_id) as cursor:
                for statement in statements:
                    await cursor.execute(statement)
                return await cursor.fetchall() if cursor.description else []
        finally:
            await db.close()

    return asyncio.run(run())


def test_a_raw_select_through_the_service_session_sees_only_the_callers_rows(
    database_url: str, alice: User, bob: User
) -> None:
    alice.create(title="alice's")
    bob.create(title="bob's")
    owners = {row["user_id"] for row in _as_service(database_url, alice.id, "SELECT * FROM tasks")}
    assert owners == {alice.id}
    users = {row["id"] for row in _as_service(database_url, alice.id, "SELECT * FROM users")}
    assert users == {alice.id}


def test_a_session_without_a_user_sees_nothing(database_url: str, alice: User) -> None:
    alice.create()
    assert _as_service(database_url, None, "SELECT count(*) FROM tasks") == [{"count": 0}]
    assert _as_service(database_url, None, "SELECT count(*) FROM users") == [{"count": 0}]


def test_rows_of_another_user_cannot_be_written_even_by_raw_sql(database_url: str, alice: User, bob: User) -> None:
    task = bob.create(title="bob's")
    changed = _as_service(
        database_url, alice.id, f"UPDATE tasks SET title = 'pwned' WHERE id = {task['id']} RETURNING id"
    )
    assert changed == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        _as_service(database_url, alice.id, f"INSERT INTO tasks (user_id, title) VALUES ('{bob.id}', 'planted')")
    assert bob.http.get(f"/api/tasks/{task['id']}").json()["title"] == "bob's"


@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE intruder (id int)"],
        ["DROP TABLE tasks"],
        ["ALTER TABLE tasks DISABLE ROW LEVEL SECURITY"],
        ["TRUNCATE tasks"],
        ["SET LOCAL row_security = off", "SELECT * FROM tasks"],
    ],
)
def test_the_service_role_can_do_no_ddl_nor_bypass_the_policies(database_url: str, statements: list[str]) -> None:
    with pytest.raises(psycopg.Error):
        _as_service(database_url, "someone", *statements)


def test_the_service_role_owns_nothing_and_has_no_bypass(db: Engine) -> None:
    with db.connect() as connection:
        role = connection.execute(
            text("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :r"),
            {"r": database.APP_ROLE},
        ).one()
        owned = connection.execute(
            text("SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = :r)"),
            {"r": database.APP_ROLE},
        ).scalar()
    assert tuple(role) == (False, False, False, False)
    assert owned == 0


# -- idempotent creates -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api", "/api/{user}"])
def test_a_retry_with_the_same_key_and_body_replays_the_first_201(db: Engine, alice: User, prefix: str) -> None:
    url = prefix.format(user=alice.id) + "/tasks"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = alice.http.post(url, json={"title": "pay rent", "tags": ["home"]}, headers=key)
    alice.http.patch(f"/api/tasks/{first.json()['id']}", json={"title": "changed since"})
    again = alice.http.post(url, json={"title": "pay rent", "tags": ["home"]}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert task_count(db, alice) == 1


def test_the_same_key_with_another_body_is_422_and_creates_nothing(db: Engine, alice: User) -> None:
    key = {"Idempotency-Key": "order-42"}
    assert alice.http.post("/api/tasks", json={"title": "one"}, headers=key).status_code == 201
    problem = assert_problem(alice.http.post("/api/tasks", json={"title": "two"}, headers=key), 422)
    assert "Idempotency-Key" in problem["detail"]
    assert task_count(db, alice) == 1


def test_keys_belong_to_their_user(db: Engine, alice: User, bob: User) -> None:
    key = {"Idempotency-Key": "shared-key"}
    mine = alice.http.post("/api/tasks", json={"title": "same"}, headers=key).json()
    theirs = bob.http.post("/api/tasks", json={"title": "same"}, headers=key)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]
    assert theirs.json()["user_id"] == bob.id


def test_a_key_is_forgotten_after_24_hours(db: Engine, alice: User) -> None:
    key = {"Idempotency-Key": "yesterday"}
    first = alice.http.post("/api/tasks", json={"title": "daily"}, headers=key).json()
    with db.begin() as connection:
        connection.execute(
            text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE user_id = :u"),
            {"u": alice.id},
        )
    second = alice.http.post("/api/tasks", json={"title": "daily"}, headers=key)
    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    assert task_count(db, alice) == 2


def test_concurrent_requests_with_one_key_create_one_task(db: Engine, make_user: Callable[[], User]) -> None:
    user = make_user()
    key = {"Idempotency-Key": str(uuid.uuid4()), "Authorization": f"Bearer {user.token}"}
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        with httpx.Client(base_url=str(user.http.base_url), timeout=30) as http:
            barrier.wait()
            answers.append(http.post("/api/tasks", json={"title": "once"}, headers=key))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [201] * 6
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert task_count(db, user) == 1


@pytest.mark.parametrize("bad_key", ["", "x" * 256, "has space", "naïve"])
def test_a_malformed_key_is_422(db: Engine, alice: User, bad_key: str) -> None:
    response = alice.http.post("/api/tasks", json={"title": "t"}, headers={"Idempotency-Key": bad_key.encode()})
    assert_problem(response, 422)
    assert task_count(db, alice) == 0


def test_the_production_setup_serves_through_a_login_that_is_only_a_member_of_the_app_role(
    database_url: str, db: Engine, start_service: Callable[..., Any]
) -> None:
    login = f"todo_api_login_{uuid.uuid4().hex[:6]}"
    with db.begin() as connection:
        connection.execute(text(f"CREATE ROLE {login} LOGIN IN ROLE {database.APP_ROLE}"))
    service = start_service(DATABASE_URL=str(make_url(database_url).set(username=login)))
    user = User(service.base_url)
    created = user.create(title="through the least-privilege login")
    assert user.http.get(f"/api/tasks/{created['id']}").status_code == 200
    assert user.http.get("/ready").status_code == 200
    with db.connect() as connection:
        sessions = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE usename = :login"), {"login": login}
        ).scalar()
    assert sessions >= 1
