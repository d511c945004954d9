"""The TypeScript client a frontend gets from the contract (clients/typescript): its generated types
are those of today's openapi.yaml, it type-checks, and its calls work against the live service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, Service, User
from tests.npm import install, run

CLIENT = ROOT / "clients" / "typescript"


@pytest.fixture(scope="module")
def client() -> Path:
    install(CLIENT)
    return CLIENT


def test_the_committed_types_are_generated_from_the_current_contract(client: Path) -> None:
    result = run(client, "check:schema")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_type_checks(client: Path) -> None:
    result = run(client, "typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_works_against_the_live_service(client: Path, service: Service, alice: User) -> None:
    result = run(client, "test", BASE_URL=service.base_url, TOKEN=alice.token)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"^(?:#|ℹ) pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^(?:#|ℹ) fail (\d+)$", output, re.MULTILINE)
    assert passed and int(passed[1]) > 0, output
    assert failed and int(failed[1]) == 0, output
