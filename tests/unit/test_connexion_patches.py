"""todo_api.connexion_patches: Connexion's handler calls are unchanged by building the decorator
chain once, and the patch stays out of any Connexion version it was not written for.

A small contract on the real Connexion, served in-process: what reaches the handlers and the
bearer function is recorded under upstream's per-request path and under the patch, and compared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncOperation
from connexion.resolver import Resolver

from todo_api import connexion_patches

CALLS: list[tuple[str, dict[str, Any]]] = []


def bearer(token: str, required_scopes: Any = "not passed") -> dict[str, Any]:
    CALLS.append(("bearer", {"token": token, "required_scopes": required_scopes}))
    return {"sub": "alice"}


async def declared(item_id: int, limit: int, body: dict[str, Any], user: str) -> dict[str, Any]:
    CALLS.append(("declared", {"item_id": item_id, "limit": limit, "body": body, "user": user}))
    return {}


async def everything(**kwargs: Any) -> dict[str, Any]:
    CALLS.append(("everything", kwargs))
    return {}


SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "patch check", "version": "1"},
    "security": [{"bearer": []}],
    "paths": {
        f"/{name}/{{item_id}}": {
            "post": {
                "operationId": name,
                "parameters": [
                    {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20}},
                ],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}},
            }
        }
        for name in ("declared", "everything")
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "x-bearerInfoFunc": f"{__name__}.bearer"}}
    },
}


@pytest.fixture(autouse=True)
def patched_again() -> Iterator[None]:
    yield
    connexion_patches.apply()  # as create_app leaves it, for the tests that run after these


def calls(patched: bool) -> list[tuple[str, dict[str, Any]]]:
    """What the handlers and the bearer function receive for the same requests."""
    if patched:
        assert connexion_patches.apply()
    else:
        connexion_patches.remove()
    app = AsyncApp(__name__)
    app.add_api(SPEC, resolver=Resolver(function_resolver=lambda name: globals()[name.rsplit(".", 1)[-1]]))
    CALLS.clear()
    with app.test_client() as client:
        for name in ("declared", "everything"):
            for _ in range(2):  # the second call takes the chain the first one built
                response = client.post(
                    f"/{name}/7?limit=3", json={"title": "x"}, headers={"Authorization": "Bearer t0ken"}
                )
                assert response.status_code == 200, response.text
    return list(CALLS)


def test_the_patch_passes_exactly_what_upstream_passes() -> None:
    upstream, patched = calls(patched=False), calls(patched=True)

    assert patched == upstream
    declared_calls = [arguments for name, arguments in patched if name == "declared"]
    assert declared_calls == [{"item_id": 7, "limit": 3, "body": {"title": "x"}, "user": "alice"}] * 2
    everything_calls = [arguments for name, arguments in patched if name == "everything"]
    assert set(everything_calls[0]) == {"item_id", "limit", "body", "user", "token_info"}
    assert ("bearer", {"token": "t0ken", "required_scopes": None}) in patched  # passed, since accepted


def test_another_connexion_version_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    connexion_patches.remove()
    upstream_fn = AsyncOperation.__dict__["fn"]

    with caplog.at_level(logging.WARNING, logger=connexion_patches.__name__):
        assert connexion_patches.apply("3.4.0") is False

    assert AsyncOperation.__dict__["fn"] is upstream_fn
    assert "connexion 3.4.0: per-request speed patch not applied (written for 3.3.0 only)" in caplog.text
    assert connexion_patches.apply() is True
    assert AsyncOperation.__dict__["fn"] is not upstream_fn
