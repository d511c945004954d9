"""What every error answer must be: an RFC 9457 problem."""

from __future__ import annotations

from typing import Any

import httpx


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


def assert_unavailable(response: httpx.Response) -> None:
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
