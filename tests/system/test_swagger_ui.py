"""Swagger UI at /api/ui/ in a real browser (Debian's headless Chromium, driven by
tests/support/browser/swagger-ui.mjs): it lists every operation of the contract, and a person who authorises
with their token and uses "Try it out" on POST /api/tasks really creates a task; each error response
shows an example of its own status."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support import ROOT, prerequisites
from tests.support.npm import install
from tests.support.service import Service
from tests.support.users import User

BROWSER = ROOT / "tests" / "support" / "browser"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def session(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One visit to Swagger UI by a fresh user: what the browser saw, and who and what it created."""
    chromium = prerequisites.program("chromium", "chromium")
    install(BROWSER)
    alice = User(service.base_url)
    title = f"made in Swagger UI {uuid.uuid4()}"
    screenshot = tmp_path_factory.mktemp("swagger-ui") / "swagger-ui.png"
    env = dict(
        os.environ,
        CHROMIUM=chromium,
        BASE_URL=service.base_url,
        TOKEN=alice.token,
        TITLE=title,
        SCREENSHOT=str(screenshot),
    )
    result = subprocess.run(
        [prerequisites.node(), "swagger-ui.mjs"], cwd=BROWSER, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\nlast screen: {screenshot}"
    yield {"alice": alice, "title": title, **json.loads(result.stdout)}
    alice.http.close()


def test_every_operation_of_the_contract_is_listed_with_its_summary(session: dict[str, Any]) -> None:
    contract = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    expected = [
        (method.upper(), path, operation["operationId"], operation["summary"])
        for path, item in contract["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]
    listed = [
        (shown["method"], shown["path"], shown["id"].rsplit("-", 1)[-1], shown["summary"])
        for shown in session["operations"]
    ]
    assert sorted(listed) == sorted(expected)


def test_try_it_out_with_the_authorised_token_creates_the_task(session: dict[str, Any]) -> None:
    alice: User = session["alice"]
    created = session["created"]
    assert created["status"] == 201, created
    assert f"Authorization: Bearer {alice.token}" in created["curl"]
    assert created["body"]["title"] == session["title"]
    assert created["body"]["user_id"] == alice.id

    stored = alice.http.get(f"/api/tasks/{created['body']['id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["title"] == session["title"]
    assert [task["title"] for task in alice.http.get("/api/tasks").json()] == [session["title"]]


def test_each_error_response_shows_the_contract_example_of_its_own_status(session: dict[str, Any]) -> None:
    contract = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    responses = contract["paths"]["/api/tasks/{id}"]["get"]["responses"]
    shown = {int(code): json.loads(text) for code, text in session["examples"].items() if text and int(code) >= 400}
    assert sorted(shown) == sorted(int(code) for code in responses if int(code) >= 400)
    for status, problem in shown.items():
        component = contract["components"]["responses"][responses[str(status)]["$ref"].rsplit("/", 1)[-1]]
        first = next(iter(component["content"]["application/problem+json"]["examples"].values()))["value"]
        assert problem["status"] == status
        assert problem == first
