"""The fixtures: one real PostgreSQL per session, the real service over HTTP, fresh users.

The database is a throwaway embedded PostgreSQL unless TEST_DATABASE_URL names a server, in
which case a fresh database is created in it (and dropped afterwards). The service runs as
`todo-api serve` in a subprocess, exactly as in production (tests/support/service.py); each test
gets users of its own. With TEST_VIA_PGBOUNCER=1 the services reach the session database through
PgBouncer in transaction mode (tests/support/pooler.py), as behind Neon's pooler; migrations and
`db` stay direct.

Tiers follow folders: tests/unit (in process, no database), tests/api (the service on the session
database) — the everyday tier — and tests/system (clusters, outages, other programs, fuzzing).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from persistence import schema
from tests.support import TLS, pooler
from tests.support.forwarder import Forwarder
from tests.support.processes import LoggedProcess
from tests.support.service import Service, fresh_database, services_on
from tests.support.users import User
from todo_api import embedded
from todo_api.settings import database_url as normalise

LOG_TAIL = 20_000  # characters of each process's log in a failed test's report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test's report carries the end of each running process's log (the service's
    tracebacks among them): the logs are deleted when the processes stop, before anyone can look."""
    report = yield
    if report.when == "call" and report.failed:
        for process in list(LoggedProcess.running):
            try:
                log = process.output()[-LOG_TAIL:]
            except OSError:
                continue
            report.sections.append((f"log of {' '.join(process.command[-6:])}", log))
    return report


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


@pytest.fixture
def forwarder(database_url: str) -> Iterator[Forwarder]:
    """A forwarder to the session database that the test can cut or silence; cut when it ends."""
    with Forwarder(database_url) as forwarding:
        yield forwarding


@pytest.fixture
def empty_url(db: Engine) -> Iterator[str]:
    """A new, empty database (not even migrated) for this test alone."""
    with fresh_database(db) as url:
        yield url


@pytest.fixture
def start_service(database_url: str) -> Iterator[Callable[..., Service]]:
    """Services for one test, stopped when it ends."""
    with services_on(database_url) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_service(database_url: str) -> Iterator[Callable[..., Service]]:
    """Services for a module's fixtures, stopped when the module ends."""
    with services_on(database_url) as start:
        yield start


@pytest.fixture(scope="session")
def service(database_url: str) -> Iterator[Service]:
    with services_on(database_url) as start:
        yield start()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=30, verify=TLS) as http:
        yield http


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
