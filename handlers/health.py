"""Unauthenticated probes and metrics for orchestrators."""

from __future__ import annotations

import hmac

from connexion import request
from starlette.responses import Response

from handlers import state
from handlers.problems import NotFound, ServiceUnavailable, Unauthorized
from handlers.responses import json_response
from persistence import schema


async def live() -> Response:
    return json_response({"status": "ok"})


async def ready() -> Response:
    """200 when PostgreSQL answers and its schema is at (or, migrated by a newer release, past) the newest migration."""
    if not await schema.is_current(state.of(request.scope).database):
        raise ServiceUnavailable("the database is unreachable or its schema is not at the newest migration")
    return json_response({"status": "ok"})


async def metrics() -> Response:
    """Prometheus text exposition; 404 when METRICS_ENABLED=false, 401 without METRICS_TOKEN when set."""
    metrics = state.of(request.scope).metrics
    if not metrics.enabled:
        raise NotFound("metrics are turned off (METRICS_ENABLED=false)")
    if metrics.tokens:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        offered = given.strip().encode()
        # Every token is compared, so the time taken does not tell which one nearly matched.
        matches = [hmac.compare_digest(offered, token) for token in metrics.tokens]
        if scheme.lower() != "bearer" or not any(matches):
            raise Unauthorized("metrics need the bearer token set in METRICS_TOKEN")
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
