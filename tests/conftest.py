"""Shared fixtures: one real PostgreSQL per session, the real service over HTTP, a token factory.

The database is a throwaway embedded PostgreSQL unless TEST_DATABASE_URL names a server, in
which case a fresh database is created in it (and dropped afterwards). The service runs as
`todo-api serve` in a subprocess, exactly as in production; each test gets users of its own.
With TEST_VIA_PGBOUNCER=1 the services reach the session database through PgBouncer in
transaction mode (tests/pooler.py), as behind Neon's pooler; migrations and `db` stay direct.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from persistence import schema
from tests import pooler, processes
from todo_api import embedded
from todo_api.settings import database_url as normalise

SECRET = "test-secret-" + "x" * 40
ROOT = Path(__file__).resolve().parent.parent
# Every field of a task as the API returns it: the contract's Task.
TASK_FIELDS = set(yaml.safe_load((ROOT / "openapi.yaml").read_text())["components"]["schemas"]["Task"]["properties"])


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated, empty database for this session."""
    given = os.environ.get("TEST_DATABASE_URL")
    if not given:
        folder = tempfile.mkdtemp(prefix="todo-api-test-")
        # Registered first, so run last: after the throwaway server has stopped and deleted pgdata.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        url = embedded.start(Path(folder) / "pgdata", throwaway=True)
        schema.migrate(url)
        yield url
        return
    server = make_url(normalise(given) or "")
    name = f"todo_api_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    schema.migrate(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def via_pgbouncer(request: pytest.FixtureRequest) -> Iterator[None]:
    """TEST_VIA_PGBOUNCER=1: services reach the session database through PgBouncer in transaction mode."""
    if os.environ.get("TEST_VIA_PGBOUNCER") != "1":
        yield
        return
    with pooler.routed(request.getfixturevalue("database_url")):
        yield


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Engine]:
    """Direct SQL access, for checking what was (not) stored."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@contextmanager
def fresh_database(server: Engine) -> Iterator[str]:
    """The URL of a new, empty database on `server`'s PostgreSQL, dropped afterwards."""
    name = f"todo_api_{uuid.uuid4().hex[:12]}"
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_url(db: Engine) -> Iterator[str]:
    """A new, empty database (not even migrated) for this test alone."""
    with fresh_database(db) as url:
        yield url


class Service(processes.LoggedProcess):
    """A running `todo-api serve` process (`--no-migrate` unless `migrate`), answering /health once
    built unless `wait` is False."""

    def __init__(self, env: dict[str, str], *extra_args: str, migrate: bool = False, wait: bool = True) -> None:
        self.port = processes.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        no_migrate = [] if migrate else ["--no-migrate"]
        super().__init__(
            [sys.executable, "-m", "todo_api.cli", "serve", *no_migrate, "--port", str(self.port), *extra_args],
            log_prefix="todo-api-serve-",
            env=env,
            cwd=ROOT,
        )
        if wait:
            try:
                self.wait_until_answering("/health")
            except RuntimeError:
                self.stop()  # a service too slow to come up is not left running
                raise

    def wait_until_answering(self, path: str, timeout: float = 30) -> None:
        """Until GET `path` is a 200; a RuntimeError with the log if the process exits or `timeout` passes."""
        probe = processes.answers(self.base_url + path)
        processes.wait_until_up(self.process, probe, name="todo-api serve", log=self.output, timeout=timeout)


def raw_get(service: Service, target: str, headers: dict[str, str], timeout: float = 10) -> httpx.Response:
    """GET `target` sent with http.client, for what httpx refuses to send: a URL over 64 KB, a header
    value ending in white space."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        raw = connection.getresponse()
        return httpx.Response(raw.status, headers=raw.getheaders(), content=raw.read())
    finally:
        connection.close()


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "BETTER_AUTH_", "CORS_", "MAX_BODY"))
    }
    env.update(DATABASE_URL=pooler.serving_url(database_url), BETTER_AUTH_SECRET=SECRET, LOG_LEVEL="WARNING")
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def start_service(database_url: str) -> Iterator[Callable[..., Service]]:
    """Start another service on the session database with extra environment, stopped at the end."""
    started: list[Service] = []

    def start(*args: str, **env: str) -> Service:
        service = Service(service_env(database_url, **env), *args)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def service(start_service: Callable[..., Service]) -> Service:
    return start_service()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        yield http


def mint(subject: Any = None, *, secret: str = SECRET, algorithm: str = "HS256", ttl: int = 600, **claims: Any) -> str:
    """A token for `subject` (left out when None), signed like Better Auth's shared-secret tokens."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + ttl, **claims}
    if subject is not None:
        payload["sub"] = subject
    return jwt.encode({k: v for k, v in payload.items() if v is not ...}, secret, algorithm=algorithm)


class User:
    """A fresh user, with a client that sends their token."""

    def __init__(self, base_url: str) -> None:
        self.id = f"user-{uuid.uuid4().hex[:12]}"
        self.token = mint(self.id, email=f"{self.id}@example.com", name="Test User")
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/api/tasks", json={"title": "a task", **fields})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def make_user(service: Service) -> Iterator[Callable[[], User]]:
    users: list[User] = []

    def make() -> User:
        users.append(User(service.base_url))
        return users[-1]

    yield make
    for user in users:
        user.http.close()


@pytest.fixture
def alice(make_user: Callable[[], User]) -> User:
    return make_user()


@pytest.fixture
def bob(make_user: Callable[[], User]) -> User:
    return make_user()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["type"]
    assert problem["detail"] == problem["error"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return problem


# Tiers. These modules start PostgreSQL clusters, `todo-api` processes, Node.js or Chromium of their
# own, fuzz the whole contract or wait out intervals: `pytest -m "not slow"` leaves them out for
# everyday work, plain `pytest` (the README's command, CI's) runs everything.
SLOW_MODULES = {
    "test_better_auth",
    "test_cli",
    "test_contract",
    "test_deadlines",
    "test_failover",
    "test_fair_share",
    "test_migrations",
    "test_operations",
    "test_reliability",
    "test_swagger_ui",
    "test_topology",
    "test_typescript_client",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
