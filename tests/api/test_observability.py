"""Observability: request ids, one JSON access-log line per request that never carries a secret,
and Prometheus metrics summed over workers."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.metrics import scrape, total
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.tokens import SECRET, mint
from tests.support.users import User

SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNREACHABLE_DATABASE = "postgresql://todo@127.0.0.1:1/todo"


@pytest.fixture(scope="module")
def logged(start_module_service: Callable[..., Service]) -> Service:
    """A service that writes its INFO access log."""
    return start_module_service(LOG_LEVEL="INFO")


def access_lines(service: Service, request_ids: set[str], timeout: float = 5) -> list[dict[str, Any]]:
    """The service's JSON access-log lines for `request_ids`, once there is one for each."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
        found = [entry for entry in entries if entry.get("logger") == "todo_api.access"]
        found = [entry for entry in found if entry.get("request_id") in request_ids]
        if {entry["request_id"] for entry in found} == request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# -- request ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("incoming", ["abc-123", "0f8e2c1a-7d4b-4c8e-9a3f-2b6d1e5f7a90", "trace.id:span_1", "x" * 128])
def test_a_sane_x_request_id_is_echoed(service: Service, incoming: str) -> None:
    response = httpx.get(service.base_url + "/health", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [None, "", "x" * 129, "x" * 500, "has spaces in it", "semi;colon", "<script>", "a/b"],
    ids=["missing", "empty", "129-chars", "500-chars", "spaces", "semicolon", "markup", "slash"],
)
def test_a_missing_or_insane_x_request_id_is_replaced_by_a_generated_one(
    service: Service, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    ids = [httpx.get(service.base_url + "/health", headers=headers).headers["x-request-id"] for _ in range(2)]
    for generated in ids:
        assert generated != incoming and SANE_ID.fullmatch(generated), generated
    assert ids[0] != ids[1]


def test_error_answers_carry_the_request_id_too(service: Service) -> None:
    response = httpx.get(service.base_url + "/api/tasks", headers={"X-Request-ID": "unauthorised-1"})
    assert_problem(response, 401)
    assert response.headers["x-request-id"] == "unauthorised-1"


# -- the access log -------------------------------------------------------------------------------


def test_every_request_writes_one_json_access_line_with_its_id_method_path_status_and_duration(logged: Service) -> None:
    user = User(logged.base_url)
    secret_query = f"private-{uuid.uuid4().hex}"
    wrong_token = mint(user.id, secret="another-secret-" + "y" * 40)
    run = uuid.uuid4().hex[:8]
    requests = [
        ("GET", f"/api/tasks?q={secret_query}", {}, 200),
        ("POST", "/api/tasks", {"json": {"title": "logged"}}, 201),
        ("GET", "/api/tasks/999999999", {}, 404),
        ("PATCH", "/api/tasks/999999999?force=yes", {"json": {"title": "x"}}, 422),
        ("GET", "/api/tasks", {"headers": {"Authorization": f"Bearer {wrong_token}"}}, 401),
        ("GET", "/health", {}, 200),
    ]
    expected = {}
    for n, (method, target, options, status) in enumerate(requests):
        rid = f"log-{run}-{n}"
        headers = {"X-Request-ID": rid, **options.pop("headers", {})}
        response = user.http.request(method, target, headers=headers, **options)
        assert (response.status_code, response.headers["x-request-id"]) == (status, rid), response.text
        expected[rid] = (method, target.split("?")[0], status)
    user.http.close()

    lines = access_lines(logged, set(expected))
    assert sorted(entry["request_id"] for entry in lines) == sorted(expected), "exactly one line per request"
    for entry in lines:
        assert (entry["method"], entry["path"], entry["status"]) == expected[entry["request_id"]]
        assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
        assert not [key for key in entry if re.search("auth|header|query|token|body", key, re.IGNORECASE)], entry

    output = logged.output()
    for leak in (user.token, wrong_token, *user.token.split("."), SECRET, secret_query, "force=yes", "Bearer"):
        assert leak not in output, f"the log carries {leak[:20]}…"


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_without_a_token_show_request_counters_latency_pool_and_db_errors(service: Service) -> None:
    user = User(service.base_url)
    before = scrape(service)
    for _ in range(5):
        assert user.http.get("/api/tasks").status_code == 200
    after = scrape(service)
    user.http.close()

    find = {"operation": "handlers.tasks.find"}
    counted = total(after, "todo_api_requests_total", **find, method="GET", status="200")
    assert counted - total(before, "todo_api_requests_total", **find, method="GET", status="200") == 5
    observed = total(after, "todo_api_request_duration_seconds_count", **find)
    assert observed - total(before, "todo_api_request_duration_seconds_count", **find) == 5
    assert total(after, "todo_api_request_duration_seconds_bucket", **find, le="+Inf") == observed
    assert ("todo_api_db_pool_connections_in_use", frozenset()) in after
    assert ("todo_api_db_errors_total", frozenset()) in after


def test_the_db_error_counter_rises_with_each_503(start_service: Callable[..., Service]) -> None:
    service = start_service(DATABASE_URL=UNREACHABLE_DATABASE)
    before = total(scrape(service), "todo_api_db_errors_total")
    with httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {mint('nobody')}"}) as http:
        for _ in range(3):
            assert_problem(http.get("/api/tasks"), 503)
    assert total(scrape(service), "todo_api_db_errors_total") - before == 3


def test_metrics_enabled_false_turns_metrics_into_a_404(start_service: Callable[..., Service]) -> None:
    service = start_service(METRICS_ENABLED="false")
    assert_problem(httpx.get(service.base_url + "/metrics"), 404)
    assert httpx.get(service.base_url + "/health").status_code == 200


def test_with_two_workers_metrics_sum_the_requests_of_both(start_service: Callable[..., Service]) -> None:
    service = start_service("--workers", "2")
    requests = 60
    for _ in range(requests):  # a connection each, so that both workers take some
        assert httpx.get(service.base_url + "/health").status_code == 200
    counted = [total(scrape(service), "todo_api_requests_total", operation="handlers.health.live") for _ in range(6)]
    print(f"\n2 workers: {requests} requests sent, every scrape counted {counted}")
    assert all(count >= requests for count in counted)


def test_metrics_token_keeps_metrics_to_whoever_holds_it(start_service: Callable[..., Service]) -> None:
    token = "metrics-" + secrets.token_urlsafe(32)
    service = start_service(METRICS_TOKEN=token)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        assert_problem(httpx.get(service.base_url + "/metrics", headers=headers, timeout=10), 401)
    response = httpx.get(service.base_url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert "todo_api_requests_total" in response.text
    assert token not in service.output()
