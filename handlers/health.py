"""Unauthenticated probes and metrics for orchestrators."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from connexion import request
from starlette.responses import Response

from handlers.problems import NotFound, ServiceUnavailable, Unauthorized
from handlers.responses import json_response
from persistence import schema


class _Options:
    metrics_enabled = True
    metrics_token: bytes | None = None
    exposition: Callable[[], bytes] = bytes


_options = _Options()


def configure(*, metrics_enabled: bool, metrics_token: str | None, exposition: Callable[[], bytes]) -> None:
    """`exposition` renders the metrics (the shell owns them; this module only serves them)."""
    _options.metrics_enabled = metrics_enabled
    _options.metrics_token = metrics_token.encode() if metrics_token else None
    _options.exposition = exposition


async def live() -> Response:
    return json_response({"status": "ok"})


async def ready() -> Response:
    """200 when PostgreSQL answers and its schema is at the newest migration."""
    if not await schema.is_current():
        raise ServiceUnavailable("the database is unreachable or its schema is not at the newest migration")
    return json_response({"status": "ok"})


async def metrics() -> Response:
    """Prometheus text exposition; 404 when METRICS_ENABLED=false, 401 without METRICS_TOKEN when set."""
    if not _options.metrics_enabled:
        raise NotFound("metrics are turned off (METRICS_ENABLED=false)")
    if _options.metrics_token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), _options.metrics_token):
            raise Unauthorized("metrics need the bearer token set in METRICS_TOKEN")
    return Response(_options.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
