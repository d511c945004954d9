"""Reliability under faults: a database restart under write load, a killed process, a stuck query,
a graceful shutdown, a one-minute soak, and serving through PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import Engine, create_engine, text

from persistence import schema
from tests.support import pooler
from tests.support.clusters import stop, throwaway_cluster
from tests.support.problems import assert_problem
from tests.support.service import Service, running, service_env
from tests.support.tokens import mint
from tests.support.users import User

PROMPT_SECONDS = 10  # the longest any single answer may take, fault or not
RECOVERY_SECONDS = 5
WRITERS = 6

State = tuple[str, str | None, bool, tuple[str, ...], int]  # title, description, completed, tags, version


@dataclass(frozen=True)
class Answer:
    started: float
    finished: float
    status: int | None  # None: no answer at all (connection lost or timed out)
    retry_after: str | None = None
    content_type: str = ""


@dataclass(frozen=True)
class Write:
    kind: str  # create | update | complete | delete
    task_id: int | None
    body: dict[str, Any] | None
    answer: Answer


def state_of(response: httpx.Response) -> State:
    task = response.json()
    version = int(response.headers["etag"].strip('"v'))
    return task["title"], task["description"], task["completed"], tuple(task["tags"]), version


def stored(engine: Engine, user_id: str) -> dict[int, State]:
    """The user's tasks as PostgreSQL holds them (read as a superuser, past row-level security)."""
    query = text("SELECT id, title, description, completed, tags, version FROM tasks WHERE user_id = :user")
    with engine.connect() as connection:
        rows = connection.execute(query, {"user": user_id})
        return {row.id: (row.title, row.description, row.completed, tuple(row.tags), row.version) for row in rows}


class Writer:
    """A user creating, updating, completing and deleting their own tasks in a loop, remembering
    every answer and the last acknowledged state of each task."""

    def __init__(self, base_url: str, seed: int) -> None:
        self.user_id = f"writer-{uuid.uuid4().hex[:12]}"
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {mint(self.user_id)}"}, timeout=PROMPT_SECONDS
        )
        self.random = random.Random(seed)
        self.acknowledged: dict[int, State | None] = {}  # None: deleted
        self.writes: list[Write] = []

    def run(self, done: threading.Event, *, until_unanswered: bool = False) -> None:
        n = 0
        while not done.is_set():
            write = self.write(n)
            n += 1
            if write.answer.status is None and until_unanswered:
                return
            time.sleep(0.02)

    def write(self, n: int) -> Write:
        live = [task_id for task_id, state in self.acknowledged.items() if state is not None]
        if not live or n % 3 == 0:
            body = {"title": f"{self.user_id} #{n}", "description": f"written as #{n}", "tags": [f"t{n % 3}"]}
            return self._send("create", None, "POST", "/api/tasks", body, 201)
        task_id = self.random.choice(live)
        if n % 7 == 0:
            return self._send("delete", task_id, "DELETE", f"/api/tasks/{task_id}", None, 204)
        if n % 2:
            body = {"title": f"{self.user_id} #{n} renamed", "description": f"updated as #{n}"}
            return self._send("update", task_id, "PATCH", f"/api/tasks/{task_id}", body, 200)
        body = {"completed": bool(self.random.getrandbits(1))}
        return self._send("complete", task_id, "PATCH", f"/api/tasks/{task_id}/complete", body, 200)

    def _send(
        self, kind: str, task_id: int | None, method: str, path: str, body: dict[str, Any] | None, success: int
    ) -> Write:
        started = time.monotonic()
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError:
            answer = Answer(started, time.monotonic(), None)
        else:
            answer = Answer(
                started,
                time.monotonic(),
                response.status_code,
                response.headers.get("retry-after"),
                response.headers.get("content-type", ""),
            )
            if response.status_code == success:
                task_id = response.json()["id"] if kind == "create" else task_id
                self.acknowledged[task_id] = None if kind == "delete" else state_of(response)  # type: ignore[index]
        self.writes.append(Write(kind, task_id, body, answer))
        return self.writes[-1]

    def allowed(self, actual: dict[int, State]) -> list[dict[int, State]]:
        """The states the database may hold: exactly what was acknowledged or, when the last write
        went unanswered, that with the whole of that write applied on top."""
        expected = {task_id: state for task_id, state in self.acknowledged.items() if state is not None}
        last = self.writes[-1] if self.writes else None
        if last is None or last.answer.status is not None:
            return [expected]
        applied = dict(expected)
        body = last.body or {}
        if last.kind == "create":
            new = [task_id for task_id, state in actual.items() if state[0] == body["title"]]
            if new:
                applied[new[0]] = (body["title"], body["description"], False, tuple(body["tags"]), 1)
        elif last.kind == "delete":
            del applied[last.task_id]  # type: ignore[arg-type]
        else:
            title, description, completed, tags, version = expected[last.task_id]  # type: ignore[index]
            changed = (body.get("title", title), body.get("description", description), body.get("completed", completed))
            applied[last.task_id] = (*changed, tags, version + 1)  # type: ignore[index]
        return [expected, applied]


@dataclass
class Load:
    writers: list[Writer]
    done: threading.Event
    threads: list[threading.Thread]

    @property
    def writes(self) -> list[Write]:
        return [write for writer in self.writers for write in writer.writes]

    def acknowledged_writes(self) -> int:
        return sum(1 for write in self.writes if write.answer.status in (200, 201, 204))


@pytest.fixture
def write_load() -> Iterator[Callable[..., Load]]:
    """Start WRITERS threads writing to a service; they are stopped and joined at the end in any case."""
    loads: list[Load] = []

    def start(base_url: str, *, until_unanswered: bool = False) -> Load:
        done = threading.Event()
        writers = [Writer(base_url, seed) for seed in range(WRITERS)]
        threads = [
            threading.Thread(target=writer.run, args=(done,), kwargs={"until_unanswered": until_unanswered})
            for writer in writers
        ]
        for thread in threads:
            thread.start()
        loads.append(Load(writers, done, threads))
        return loads[-1]

    yield start
    for load in loads:
        load.done.set()
        for thread in load.threads:
            thread.join(PROMPT_SECONDS + 5)
        for writer in load.writers:
            writer.http.close()


def stop_writing(load: Load) -> None:
    load.done.set()
    for thread in load.threads:
        thread.join(PROMPT_SECONDS + 5)
        assert not thread.is_alive(), "a writer is stuck waiting for an answer"


# -- faults -----------------------------------------------------------------------------------------


def test_a_database_restart_under_write_load_loses_no_acknowledged_write_and_half_applies_none(
    write_load: Callable[..., Load],
) -> None:
    with throwaway_cluster() as (url, cluster):
        schema.migrate(url)
        with running(service_env(url)) as service:
            pid = service.process.pid
            load = write_load(service.base_url)
            time.sleep(2)
            outage_started = time.monotonic()
            stop(cluster)
            outage_confirmed = time.monotonic()
            time.sleep(3)
            restart_started = time.monotonic()
            cluster.ensure_postgres_running()
            restarted = time.monotonic()
            time.sleep(RECOVERY_SECONDS + 2)
            stop_writing(load)
            assert service.process.poll() is None and service.process.pid == pid
        engine = create_engine(url)
        try:
            actual = {writer.user_id: stored(engine, writer.user_id) for writer in load.writers}
        finally:
            engine.dispose()

    writes = load.writes
    during = [w for w in writes if w.answer.started >= outage_confirmed and w.answer.finished <= restart_started]
    after = [w for w in writes if w.answer.started >= restarted]
    recovered = min((w.answer.finished for w in after if w.answer.status in (200, 201, 204)), default=1e9) - restarted
    latencies = [w.answer.finished - w.answer.started for w in during]
    print(
        f"\ndatabase restart under load: {WRITERS} writers, {len(writes)} writes, "
        f"{load.acknowledged_writes()} acknowledged; stop took {outage_confirmed - outage_started:.2f}s, "
        f"restart {restarted - restart_started:.2f}s; during the outage {len(during)} writes answered "
        f"{dict(Counter(w.answer.status for w in during))} in at most {max(latencies, default=0):.3f}s "
        f"(median {statistics.median(latencies or [0]):.3f}s); first acknowledged write {recovered:.2f}s after "
        f"the restart; all answers {dict(Counter(w.answer.status for w in writes))}"
    )
    assert len(during) >= WRITERS
    for write in during:
        assert write.answer.status == 503, write
        assert write.answer.content_type.startswith("application/problem+json"), write
        assert int(write.answer.retry_after or 0) > 0, write
    assert {w.answer.status for w in writes} <= {200, 201, 204, 503}, "no 500, no hang, no lost connection"
    assert recovered <= RECOVERY_SECONDS
    settled = [w for w in after if w.answer.started >= restarted + RECOVERY_SECONDS]
    assert settled and all(w.answer.status in (200, 201, 204) for w in settled)
    for writer in load.writers:
        assert actual[writer.user_id] == writer.allowed(actual[writer.user_id])[0], writer.user_id


def test_a_process_killed_mid_write_keeps_every_acknowledged_write(
    start_service: Callable[..., Service], db: Engine, write_load: Callable[..., Load]
) -> None:
    service = start_service()
    load = write_load(service.base_url, until_unanswered=True)
    time.sleep(1.5)
    service.process.kill()
    service.process.wait(PROMPT_SECONDS)
    stop_writing(load)
    again = start_service()

    unanswered = [writer.writes[-1] for writer in load.writers if writer.writes[-1].answer.status is None]
    outcomes: Counter[str] = Counter()
    for writer in load.writers:
        actual = stored(db, writer.user_id)
        allowed = writer.allowed(actual)
        assert actual in allowed, (
            f"{writer.user_id}: stored state is neither the acknowledged one nor that plus its last write"
        )
        if len(allowed) == 2:
            outcomes["applied" if actual == allowed[1] and allowed[0] != allowed[1] else "not applied"] += 1
        # The restarted service serves what is stored: every task ever acknowledged, and any the
        # unanswered last write created, as it is in PostgreSQL, or 404 when (last) deleted.
        with httpx.Client(base_url=again.base_url, headers=writer.http.headers, timeout=PROMPT_SECONDS) as http:
            for task_id in writer.acknowledged.keys() | actual.keys():
                fetched = http.get(f"/api/tasks/{task_id}")
                if task_id in actual:
                    assert fetched.status_code == 200, fetched.text
                    assert state_of(fetched) == actual[task_id]
                else:
                    assert fetched.status_code == 404, fetched.text
    print(
        f"\nprocess killed mid-write: {len(load.writes)} writes, {load.acknowledged_writes()} acknowledged and all "
        f"stored; {len(unanswered)} in flight at the kill ({dict(Counter(w.kind for w in unanswered))}: "
        f"{dict(outcomes)}); "
        f"answers {dict(Counter(w.answer.status for w in load.writes))}"
    )
    assert load.acknowledged_writes() >= 2 * WRITERS
    assert {w.answer.status for w in load.writes} <= {200, 201, 204, None}


def waiting_for_locks(db: Engine) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with db.connect() as connection:
        return connection.scalar(query) or 0


def lock_tasks_of(connection: Any, user: User) -> None:
    """Hold a row lock on every task of `user` until `connection`'s transaction ends."""
    connection.execute(text("SELECT id FROM tasks WHERE user_id = :user FOR UPDATE"), {"user": user.id})


def timed_request(
    user: User, method: str, path: str, body: dict[str, Any] | None, timeout: float = PROMPT_SECONDS
) -> tuple[float, httpx.Response | None]:
    """How long the answer took, and the answer (None when there was none within `timeout`)."""
    started = time.monotonic()
    try:
        response = httpx.request(
            method, user.http.base_url.join(path), json=body, headers=user.http.headers, timeout=timeout
        )
    except httpx.TransportError:
        return time.monotonic() - started, None
    return time.monotonic() - started, response


def test_a_stuck_query_is_a_prompt_503_and_leaves_the_pool_whole(
    start_service: Callable[..., Service], db: Engine
) -> None:
    service = start_service(DB_STATEMENT_TIMEOUT_MS="500", DB_POOL_SIZE="2")
    user = User(service.base_url)
    tasks = [user.create(title=f"locked {n}") for n in range(3)]
    stuck = [
        *(("PATCH", f"/api/tasks/{task['id']}", {"title": "never stored"}) for task in tasks),
        *(("PATCH", f"/api/tasks/{task['id']}/complete", {"completed": True}) for task in tasks),
        *(("DELETE", f"/api/tasks/{task['id']}", None) for task in tasks),
    ]  # 9 requests at once: more than the pool's 2 connections plus 2 overflow
    with db.connect() as locker, ThreadPoolExecutor(len(stuck)) as pool:
        lock_tasks_of(locker, user)
        answers = list(pool.map(lambda request: timed_request(user, *request, timeout=5), stuck))
        locker.rollback()
    print(
        f"\nstuck query: {len(stuck)} writes answered "
        + ", ".join(
            f"{response.status_code if response else 'nothing'} in {elapsed:.2f}s" for elapsed, response in answers
        )
    )
    for elapsed, response in answers:
        assert response is not None, f"no answer within {elapsed:.1f}s: the stuck query was not cancelled"
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0
        assert elapsed < 3
    for task in tasks:
        assert user.http.get(f"/api/tasks/{task['id']}").json() == task

    with ThreadPoolExecutor(8) as pool:
        listed = list(pool.map(lambda _: timed_request(user, "GET", "/api/tasks", None), range(40)))
    assert [response and response.status_code for _, response in listed] == [200] * 40
    for task in tasks:
        assert user.http.patch(f"/api/tasks/{task['id']}", json={"title": "stored"}).status_code == 200
    user.http.close()


def test_sigterm_lets_requests_in_flight_finish_and_the_process_exits_0(
    start_service: Callable[..., Service], db: Engine
) -> None:
    service = start_service()
    user = User(service.base_url)
    tasks = [user.create(title=f"slow {n}") for n in range(3)]
    with db.connect() as locker, ThreadPoolExecutor(len(tasks)) as pool:
        lock_tasks_of(locker, user)
        in_flight = [
            pool.submit(timed_request, user, "PATCH", f"/api/tasks/{task['id']}", {"title": "finished"})
            for task in tasks
        ]
        deadline = time.monotonic() + PROMPT_SECONDS
        while waiting_for_locks(db) < len(tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_for_locks(db) >= len(tasks), "the writes never reached the locked rows"
        service.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        still_running = service.process.poll() is None
        locker.rollback()
        answers = [response for _, response in (future.result() for future in in_flight)]
    user.http.close()
    exit_code = service.process.wait(PROMPT_SECONDS)
    print(f"\nSIGTERM: in-flight answers {[r and r.status_code for r in answers]}, exit code {exit_code}")
    assert still_running, "the process did not wait for its requests in flight"
    for response in answers:
        assert response is not None and response.status_code == 200, response and response.text
        assert response.json()["title"] == "finished"
    assert exit_code == 0, service.output()


# -- a soak -----------------------------------------------------------------------------------------

SOAK_USERS = 100
SOAK_SECONDS = 60


@dataclass
class Soak:
    statuses: Counter[int | None]
    latencies: list[float]
    rss: list[tuple[float, int]]  # (seconds since the start, bytes)


async def soak(base_url: str, process: psutil.Process) -> Soak:
    """SOAK_USERS users, each creating, reading, listing, updating, completing and deleting a task
    in a loop for SOAK_SECONDS, while the service's memory is sampled every second."""
    result = Soak(Counter(), [], [])
    started = time.monotonic()
    deadline = started + SOAK_SECONDS

    async def call(http: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response | None:
        sent = time.monotonic()
        try:
            response = await http.request(method, path, json=body)
        except httpx.TransportError:
            result.statuses[None] += 1
            return None
        result.latencies.append(time.monotonic() - sent)
        result.statuses[response.status_code] += 1
        return response

    async def user(n: int) -> None:
        headers = {"Authorization": f"Bearer {mint(f'soak-{n}-{uuid.uuid4().hex[:8]}')}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=PROMPT_SECONDS) as http:
            while time.monotonic() < deadline:
                created = await call(http, "POST", "/api/tasks", {"title": f"soak {n}", "tags": ["soak"]})
                if created is None or created.status_code != 201:
                    continue
                task = created.headers["location"]
                await call(http, "GET", task)
                await call(http, "GET", "/api/tasks?limit=20&sort=-updated_at")
                await call(http, "PATCH", task, {"title": f"soak {n} renamed", "priority": "high"})
                await call(http, "PATCH", f"{task}/complete", {})
                await call(http, "DELETE", task)

    async def sample() -> None:
        while time.monotonic() < deadline:
            result.rss.append((time.monotonic() - started, process.memory_info().rss))
            await asyncio.sleep(1)

    await asyncio.gather(sample(), *(user(n) for n in range(SOAK_USERS)))
    return result


def test_a_soak_of_100_concurrent_users_for_a_minute_has_no_5xx_and_memory_levels_off(
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    result = asyncio.run(soak(service.base_url, psutil.Process(service.process.pid)))

    second_half = [rss for at, rss in result.rss if at >= SOAK_SECONDS / 2]
    growth = (second_half[-1] - second_half[0]) / second_half[0]
    total = sum(result.statuses.values())
    latencies = sorted(result.latencies)
    print(
        f"\nsoak: {SOAK_USERS} users for {SOAK_SECONDS}s, {total} requests ({total / SOAK_SECONDS:.0f}/s), "
        f"answers {dict(result.statuses)}; latency p50 {latencies[len(latencies) // 2] * 1000:.1f}ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f}ms, max {latencies[-1] * 1000:.1f}ms; "
        f"RSS {result.rss[0][1] >> 20} MiB at the start, {second_half[0] >> 20} MiB at half time, "
        f"{second_half[-1] >> 20} MiB at the end (max {max(rss for _, rss in result.rss) >> 20} MiB): "
        f"{growth:+.1%} in the second half"
    )
    assert total >= SOAK_USERS * 6
    assert not [status for status in result.statuses if status is None or status >= 500], dict(result.statuses)
    assert growth < 0.10
    assert service.process.poll() is None


# -- PgBouncer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pooled_service(database_url: str) -> Iterator[Service]:
    """A service whose every query goes through PgBouncer (transaction mode, only 2 server connections)."""
    with (
        pooler.running(database_url, pool_size=2) as pooled,
        running(service_env(database_url, DATABASE_URL=pooled)) as service,
    ):
        yield service


def test_through_pgbouncer_in_transaction_mode_every_operation_works(pooled_service: Service) -> None:
    user = User(pooled_service.base_url)
    created = user.create(title="pooled", tags=["pgbouncer"], priority="high")
    task = f"/api/tasks/{created['id']}"
    assert user.http.get("/api/tasks").json() == [created]
    assert user.http.get(task).json() == created
    patched = user.http.patch(task, json={"title": "pooled and patched", "description": None})
    assert patched.status_code == 200 and patched.json()["title"] == "pooled and patched"
    completed = user.http.patch(f"{task}/complete", json={"completed": True})
    assert completed.status_code == 200 and completed.json()["status"] == "complete"
    assert user.http.delete(task).status_code == 204
    assert user.http.get(task).status_code == 404
    assert user.http.get("/ready").status_code == 200
    user.http.close()


def test_through_pgbouncer_users_sharing_server_connections_never_see_each_other(pooled_service: Service) -> None:
    def own_tasks_only(n: int) -> bool:
        user = User(pooled_service.base_url)
        try:
            mine = {user.create(title=f"{user.id} #{i}")["id"] for i in range(5)}
            listed = [user.http.get("/api/tasks").json() for _ in range(5)]
            return all(
                {task["id"] for task in page} == mine and {t["user_id"] for t in page} == {user.id} for page in listed
            )
        finally:
            user.http.close()

    with ThreadPoolExecutor(10) as pool:
        assert all(pool.map(own_tasks_only, range(20)))
