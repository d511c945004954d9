"""Fair share: while other users are served, one user's slow requests hold at most DB_MAX_PER_USER
of a process's connections; beyond a short wait they get 429 with Retry-After, and other users are
served as if nothing happened. Alone, a user may use more than the share (work-conserving). A
user's ordinary burst never sees a 429."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import Engine, text

from persistence.fair_share import FAIR_SHARE_WAIT_SECONDS
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.users import User

DB_MAX_PER_USER = 4  # the default

ATTACK_REQUESTS = 30
VICTIM_THREADS = 2
BURST = 20  # SPEC: a frontend's "mark all done" of this many concurrent requests always succeeds


@contextmanager
def slowed(db: Engine, task: dict[str, Any]) -> Iterator[None]:
    """Every write to `task` waits while this block runs (another transaction holds its row): the
    owner's requests become as slow as requests can be, each holding a connection meanwhile."""
    with db.connect() as connection, connection.begin():
        connection.execute(text("SELECT FROM tasks WHERE id = :id FOR UPDATE"), {"id": task["id"]})
        yield


def timed(call: Callable[[], httpx.Response]) -> tuple[float, int]:
    started = time.monotonic()
    status = call().status_code
    return time.monotonic() - started, status


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def test_one_user_flooding_slow_requests_gets_429s_and_another_user_is_not_held_up(
    start_service: Callable[..., Service], db: Engine
) -> None:
    service = start_service(RATE_LIMIT_PER_SECOND="0")  # the share alone, not the rate (test_rate_limit.py)
    attacker, victim = User(service.base_url), User(service.base_url)
    target = attacker.create(title="contended")
    for n in range(20):
        victim.create(title=f"victim {n}")
    baseline = [timed(lambda: victim.http.get("/api/tasks")) for _ in range(40)]

    attack_over = threading.Event()
    during: list[tuple[float, int]] = []

    def victim_lists() -> None:
        while not attack_over.is_set():
            during.append(timed(lambda: victim.http.get("/api/tasks")))

    def write() -> httpx.Response:
        return attacker.http.patch(f"/api/tasks/{target['id']}", json={"description": "again"})

    victims = [threading.Thread(target=victim_lists) for _ in range(VICTIM_THREADS)]
    with ThreadPoolExecutor(ATTACK_REQUESTS) as pool:
        with slowed(db, target):
            attack = [pool.submit(timed, write) for _ in range(ATTACK_REQUESTS)]
            for thread in victims:
                thread.start()
            refused = next((f for f in as_completed(attack, timeout=60) if f.result()[1] == 429), None)
        answers = [future.result() for future in attack]
    attack_over.set()
    for thread in victims:
        thread.join()

    attack_statuses = Counter(status for _, status in answers)
    print(
        f"\nfair share: {ATTACK_REQUESTS} concurrent slow writes answered {dict(attack_statuses)}; the other "
        f"user's list p95 {p95([t for t, _ in baseline]) * 1000:.1f} ms alone, "
        f"{p95([t for t, _ in during]) * 1000:.1f} ms during the attack ({len(during)} requests, "
        f"answers {dict(Counter(s for _, s in during))})"
    )
    assert refused is not None, f"the flood was never refused: {dict(attack_statuses)}"
    assert set(attack_statuses) == {200, 429}, attack_statuses
    assert during and {status for _, status in during} == {200}
    # Served in their own time, not behind the flood: the other user's slowest lists stay well
    # under the time a refused request waited for its turn, measured in the same run.
    waited = min(elapsed for elapsed, status in answers if status == 429)
    assert p95([t for t, _ in during]) < waited / 2


def test_a_users_burst_of_ordinary_requests_all_succeed(make_user: Callable[[], User]) -> None:
    user = make_user()
    tasks = [user.create(title=f"burst {n}") for n in range(BURST)]
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(
            pool.map(lambda task: user.http.patch(f"/api/tasks/{task['id']}/complete", json={}).status_code, tasks)
        )
    assert answers == [200] * BURST


def test_a_429_is_a_problem_with_retry_after(start_service: Callable[..., Service], db: Engine) -> None:
    service = start_service(DB_MAX_PER_USER="1", RATE_LIMIT_PER_SECOND="0")
    user, other = User(service.base_url), User(service.base_url)
    target = user.create(title="contended")
    answered, served = threading.Event(), threading.Event()

    def other_lists() -> None:  # another user served meanwhile: the share binds
        while not served.is_set():
            assert other.http.get("/api/tasks").status_code == 200
            answered.set()

    with ThreadPoolExecutor(4) as pool, slowed(db, target):
        lists = pool.submit(other_lists)
        try:
            # Before the other user's first request, the share lends: the user would not wait at all.
            assert answered.wait(30), "the other user's first list was not answered"
            pending = [
                pool.submit(user.http.patch, f"/api/tasks/{target['id']}", json={"title": "x"}) for _ in range(3)
            ]
            answers = (future.result() for future in as_completed(pending, timeout=60))
            refused = next((answer for answer in answers if answer.status_code == 429), None)
        finally:
            served.set()
    lists.result()  # every list of the other user's was answered 200
    assert refused is not None, "no request waited past its turn"
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) > 0


def test_alone_a_user_may_use_more_than_the_share(start_service: Callable[..., Service], db: Engine) -> None:
    """Work-conserving: 30 concurrent requests of one user on a quiet service, each slower than the
    share's wait, all succeed."""
    service = start_service()
    user = User(service.base_url)
    target = user.create(title="contended")
    with ThreadPoolExecutor(30) as pool:
        with slowed(db, target):
            pending = [
                pool.submit(user.http.patch, f"/api/tasks/{target['id']}", json={"title": "x"}) for _ in range(30)
            ]
            poll(
                lambda: lock_waiters(db) >= 2 * DB_MAX_PER_USER, "more of the user's writes than the share run at once"
            )
            time.sleep(FAIR_SHARE_WAIT_SECONDS + 0.5)  # the scenario: every request is slow, not a stand-in
        statuses = Counter(future.result().status_code for future in pending)
    assert statuses == {200: 30}, statuses


def lock_waiters(db: Engine) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with db.connect() as connection:
        return int(connection.scalar(query) or 0)


def poll(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
