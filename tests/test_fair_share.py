"""Fair share (SPEC "Bounds"): one user's expensive requests hold at most DB_MAX_PER_USER of a
process's connections; beyond a short wait they get 429 with Retry-After, and other users are
served as if nothing happened. A user's ordinary burst never sees a 429."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import Service, User, assert_problem
from todo_api.app import contract

ATTACK_REQUESTS = 30
VICTIM_THREADS = 2
SEARCH_SECONDS = 0.5  # the attacker adds tasks until one search alone takes this long
BURST = 20  # SPEC: a frontend's "mark all done" of this many concurrent requests always succeeds


def costliest_search(spec: dict[str, object]) -> str:
    """The longest `q` the contract allows, almost matching the descriptions everywhere:
    ILIKE '%…%' then compares nearly all of the pattern at every position of every description."""
    length = spec["components"]["schemas"]["SearchText"]["maxLength"]  # type: ignore[index]
    return "a" * (length - 1) + "b"


def costly_data(user: User, spec: dict[str, object], search: str) -> None:
    """Tasks with the longest description allowed, added until one `search` alone is slow."""
    length = spec["components"]["schemas"]["Task"]["properties"]["description"]["maxLength"]  # type: ignore[index]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(15):
            list(pool.map(lambda n: user.create(title=f"t{n}", description="a" * length), range(20)))
            if timed_get(user.http, search)[0] >= SEARCH_SECONDS:
                return


def timed_get(http: httpx.Client, path: str) -> tuple[float, int]:
    started = time.monotonic()
    status = http.get(path).status_code
    return time.monotonic() - started, status


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def test_one_user_flooding_searches_gets_429s_and_another_user_is_not_held_up(
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    attacker, victim = User(service.base_url), User(service.base_url)
    spec = contract()
    search = f"/api/tasks?limit=1&q={costliest_search(spec)}"
    costly_data(attacker, spec, search)
    for n in range(20):
        victim.create(title=f"victim {n}")

    baseline = [timed_get(victim.http, "/api/tasks") for _ in range(40)]

    attack_over = threading.Event()
    during: list[tuple[float, int]] = []

    def victim_lists() -> None:
        while not attack_over.is_set():
            during.append(timed_get(victim.http, "/api/tasks"))

    victims = [threading.Thread(target=victim_lists) for _ in range(VICTIM_THREADS)]
    with ThreadPoolExecutor(ATTACK_REQUESTS) as pool:
        attack = [pool.submit(timed_get, attacker.http, search) for _ in range(ATTACK_REQUESTS)]
        for thread in victims:
            thread.start()
        searches = [future.result() for future in attack]
    attack_over.set()
    for thread in victims:
        thread.join()

    attack_statuses = Counter(status for _, status in searches)
    searched = [elapsed for elapsed, status in searches if status == 200]
    print(
        f"\nfair share: {ATTACK_REQUESTS} concurrent searches answered {dict(attack_statuses)}, a search taking "
        f"{statistics.median(searched or [0]) * 1000:.0f} ms (median); the other user's list p95 "
        f"{p95([t for t, _ in baseline]) * 1000:.1f} ms alone, {p95([t for t, _ in during]) * 1000:.1f} ms "
        f"during the attack ({len(during)} requests, answers {dict(Counter(s for _, s in during))})"
    )
    assert set(attack_statuses) <= {200, 429, 503}, attack_statuses  # 503: a search over its time budget
    assert attack_statuses[429] > 0, "the flood was never refused"
    assert attack_statuses[200] > 0, "the user was refused everything"
    assert during and {status for _, status in during} == {200}
    # Served in their own time, not behind the searches: the other user's slowest lists stay well
    # under the time one search takes, measured in the same run.
    assert p95([t for t, _ in during]) < statistics.median(searched) / 2


def test_a_users_burst_of_ordinary_requests_all_succeed(make_user: Callable[[], User]) -> None:
    user = make_user()
    tasks = [user.create(title=f"burst {n}") for n in range(BURST)]
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(
            pool.map(lambda task: user.http.patch(f"/api/tasks/{task['id']}/complete", json={}).status_code, tasks)
        )
    assert answers == [200] * BURST


def test_a_429_is_a_problem_with_retry_after(start_service: Callable[..., Service]) -> None:
    service = start_service(DB_MAX_PER_USER="1")
    user = User(service.base_url)
    spec = contract()
    search = f"/api/tasks?limit=1&q={costliest_search(spec)}"
    costly_data(user, spec, search)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: user.http.get(search), range(10)))
    refused = [response for response in answers if response.status_code == 429]
    assert refused, Counter(response.status_code for response in answers)
    assert_problem(refused[0], 429)
    assert int(refused[0].headers["retry-after"]) > 0
