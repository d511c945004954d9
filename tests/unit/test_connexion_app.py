"""todo_api.connexion_app: Connexion's handler calls are unchanged by building the decorator
chain once, Connexion's own classes are untouched, and any version it was not written for is
served as upstream serves it.

A small contract on the real Connexion, served in-process: what reaches the handlers and the
bearer function is recorded under upstream's per-request path and under ours, and compared.
"""

from __future__ import annotations

import logging
from typing import Any

import connexion.security
import pytest
from connexion.apps.asynchronous import AsyncOperation
from connexion.resolver import Resolver
from connexion.security import SECURITY_HANDLERS, BearerSecurityHandler
from connexion.utils import inspect_function_arguments

from todo_api import connexion_app
from todo_api.connexion_app import App

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


def calls(once: bool) -> list[tuple[str, dict[str, Any]]]:
    """What the handlers and the bearer function receive for the same requests."""
    app = App(__name__, once=once)
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


def test_building_once_passes_exactly_what_upstream_passes() -> None:
    upstream, once = calls(once=False), calls(once=True)

    assert once == upstream
    declared_calls = [arguments for name, arguments in once if name == "declared"]
    assert declared_calls == [{"item_id": 7, "limit": 3, "body": {"title": "x"}, "user": "alice"}] * 2
    everything_calls = [arguments for name, arguments in once if name == "everything"]
    assert set(everything_calls[0]) == {"item_id", "limit", "body", "user", "token_info"}
    assert ("bearer", {"token": "t0ken", "required_scopes": None}) in once  # passed, since accepted


def test_connexion_itself_is_left_as_upstream_wrote_it() -> None:
    calls(once=True)

    assert isinstance(AsyncOperation.__dict__["fn"], property)
    assert SECURITY_HANDLERS["bearer"] is BearerSecurityHandler
    assert connexion.security.inspect_function_arguments is inspect_function_arguments


def test_another_connexion_version_is_served_as_upstream_serves_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=connexion_app.__name__):
        assert connexion_app.once_per_operation("3.4.0") is False

    assert "connexion 3.4.0: per-request work as upstream does it (written for 3.3.0 only)" in caplog.text
    assert connexion_app.once_per_operation() is True
