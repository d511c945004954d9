"""The per-user rate limit: a token bucket per user and process, decided right after the token,
counting the requests a user sends while another of theirs is being worked on. A flood by one
user — within the database share or far beyond it — leaves another user's latency within ×2 of
what it is alone; a frontend's burst of 20 never meets it; a refusal is a 429 with Retry-After and
the IETF RateLimit fields, and every admitted answer carries those fields."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support import ROOT
from tests.support.metrics import scrape, total
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.users import User

SECONDS = 10.0  # each phase of the measurement
RATE, BURST = 20, 50  # the defaults, RATE_LIMIT_PER_SECOND and RATE_LIMIT_BURST
FLOODS = {"8 connections (within the database share)": 8, "100 connections": 100}


def run_client(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.support.traffic", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    answer: dict[str, Any] = json.loads(output)
    return answer


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def counted(service: Service) -> float:
    """The requests the service's rate limit has counted: each took one of its user's tokens."""
    return total(scrape(service), "todo_api_rate_limit_admissions_total", counted="true")


def victim_alone(service: Service, victim: User) -> dict[str, Any]:
    return result(run_client("victim", service.base_url, victim.token, str(SECONDS)))


def test_a_flood_by_one_user_leaves_anothers_p95_within_twice_its_own(start_service: Callable[..., Service]) -> None:
    service = start_service()
    flooder, victim = User(service.base_url), User(service.base_url)
    for n in range(20):
        flooder.create(title=f"flooder {n}")
        victim.create(title=f"victim {n}")

    alone = [victim_alone(service, victim)]
    during: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    tokens_taken: dict[str, tuple[float, float]] = {}  # by each flood: (counted requests, seconds it lasted)
    for name, connections in FLOODS.items():
        before, started = counted(service), time.monotonic()
        flood = run_client("flood", service.base_url, flooder.token, str(connections), str(SECONDS))
        measured = run_client("victim", service.base_url, victim.token, str(SECONDS))
        during[name] = (result(flood), result(measured))
        tokens_taken[name] = (counted(service) - before, time.monotonic() - started)
    alone.append(victim_alone(service, victim))

    baseline = max(p95(run["latencies"]) for run in alone)  # the machine is shared: its noisier run
    alone_ms = ", ".join(f"{p95(run['latencies']) * 1000:.1f} ms" for run in alone)
    report = [f"victim's list p95 alone: {alone_ms} (before and after the floods)"]
    for name, (flood, measured) in during.items():
        ratio = p95(measured["latencies"]) / baseline
        taken, seconds = tokens_taken[name]
        report.append(
            f"flood of {name}: flooder's answers {flood['statuses']} ({taken:.0f} took a token in {seconds:.1f} s); "
            f"victim's p95 {p95(measured['latencies']) * 1000:.1f} ms (×{ratio:.2f}), answers {measured['statuses']}"
        )
    print("\n" + "\n".join(report))

    for run in alone:
        assert set(run["statuses"]) == {"200"}, run["statuses"]
    for name, (flood, measured) in during.items():
        assert set(measured["statuses"]) == {"200"}, (name, measured["statuses"])
        # Beyond its burst the flood is slowed to the rate (waiting for its tokens), or refused. Only
        # its requests that overlap another of its own take a token (the victim's never overlap):
        # how many do depends on how fast the flood's client runs, so the bound is on those.
        assert set(flood["statuses"]) <= {"200", "429"}, (name, flood["statuses"])
        taken, seconds = tokens_taken[name]
        assert 0 < taken <= BURST + RATE * seconds, (name, taken, seconds)
        assert p95(measured["latencies"]) <= 2 * baseline, report
    assert "429" in during["100 connections"][0]["statuses"]


def test_a_burst_of_20_never_meets_the_limit_and_answers_carry_the_ratelimit_fields(
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: user.http.post("/api/tasks", json={"title": "burst"}), range(20)))
    assert [answer.status_code for answer in answers] == [201] * 20
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == '"default";q=50;w=3'
        assert answer.headers["ratelimit"].startswith('"default";r=')


def test_beyond_the_rate_a_request_is_a_429_with_retry_after_and_the_ratelimit_fields(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(RATE_LIMIT_PER_SECOND="1", RATE_LIMIT_BURST="20")
    user, other = User(service.base_url), User(service.base_url)
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: user.http.get("/api/tasks"), range(30)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) >= 20 and 429 in statuses, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"default";q=20;w=20'
    assert refused.headers["ratelimit"].startswith('"default";r=0;t=')
    assert other.http.get("/api/tasks").status_code == 200  # per user
    for who in (user, other):
        who.http.close()


def test_a_client_that_waits_for_each_answer_is_never_counted(start_service: Callable[..., Service]) -> None:
    """Only a request sent while another of the user's is being worked on counts: one at a time
    holds at most one request's worth of the process (a test suite, a sync script)."""
    service = start_service(RATE_LIMIT_PER_SECOND="1", RATE_LIMIT_BURST="20")
    user = User(service.base_url)
    answers = [user.http.get("/api/tasks") for _ in range(60)]
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.headers["ratelimit"] for answer in answers} == {'"default";r=20;t=0'}
    user.http.close()
