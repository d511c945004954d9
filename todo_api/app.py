"""The Connexion application: openapi.yaml routed to handlers/, with our validators, errors and middleware."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import RelativeResolver
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers import auth, cursors
from handlers.live import Live
from handlers.rate_limit import RateLimiter
from handlers.reminders import Scheduler
from handlers.state import AppState, Metrics
from persistence.database import Database
from todo_api import mcp_server, problems, supervision, swagger_ui, transport
from todo_api.connexion_app import App
from todo_api.middleware import CORS, ErrorGuard, RequestLimits, ResponseHeaders
from todo_api.observability import RequestContext, configure_logging, metrics_exposition, sample_pool
from todo_api.settings import ConfigError, Settings, load
from todo_api.validation import validator_map

_PACKAGE = Path(__file__).resolve().parent
# A checkout has the contract at the repository's root; an installed wheel, inside this package.
CONTRACT = next(
    (path for path in (_PACKAGE.parent / "openapi.yaml", _PACKAGE / "openapi.yaml") if path.is_file()),
    _PACKAGE / "openapi.yaml",
)
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
RATE_LIMIT_WAIT_SECONDS = 1.0  # a request over the rate waits this long for its token, at most


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI application for `settings` (read from the environment when not given)."""
    settings = settings or load()
    if settings.database_url is None:
        raise ConfigError("DATABASE_URL is required to serve (`todo-api serve` provides one when embedding)")
    if not settings.verifies_tokens:
        raise ConfigError("BETTER_AUTH_SECRET, BETTER_AUTH_URL or JWT_JWKS_URL is required to verify tokens")
    configure_logging(settings.log_level)
    supervision.end_with_master()
    if not settings.cursor_secrets:
        raise ConfigError("CURSOR_SECRET (or BETTER_AUTH_SECRET) is required to sign list cursors")
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        max_per_user=settings.db_max_per_user,
        settings={"app.changes_retention_days": str(settings.changes_retention_days)},  # read by migration 0007
    )
    live = Live(
        db,
        listen_url=settings.listen_database_url or settings.database_url,
        max_per_user=settings.max_streams_per_user,
    )
    scheduler = Scheduler(db, live, late_seconds=settings.reminder_late_seconds)
    app_state = AppState(
        database=db,
        tokens=auth.token_rules(
            secrets=settings.auth_secrets,
            better_auth_url=settings.better_auth_url,
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            jwks_min_refresh_seconds=settings.jwks_min_refresh_seconds,
        ),
        verified_tokens=auth.VerifiedTokens(),
        cursor_keys=cursors.keyring(settings.cursor_secrets),
        change_keys=cursors.keyring(settings.cursor_secrets, cursors.CHANGE_TOKEN),
        max_tasks_per_user=settings.max_tasks_per_user,
        search_timeout_ms=settings.search_timeout_ms,
        metrics=Metrics(
            enabled=settings.metrics_enabled,
            tokens=tuple(
                token.strip().encode() for token in (settings.metrics_token or "").split(",") if token.strip()
            ),
            exposition=metrics_exposition,
        ),
        live=live,
        changes_retention_days=settings.changes_retention_days,
        stream_heartbeat_seconds=settings.stream_heartbeat_seconds,
        stream_max_seconds=settings.stream_max_seconds,
        rate_limiter=(
            RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst, max_wait=RATE_LIMIT_WAIT_SECONDS)
            if settings.rate_limit_per_second
            else None
        ),
    )

    spec = contract(settings.openapi_file or CONTRACT)
    assistants = mcp_server.Endpoint(
        spec, max_body_bytes=settings.max_body_bytes
    )  # before Connexion works on the same data

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await db.open()
        sampler = asyncio.create_task(sample_pool(db))
        await live.start()
        transport.on_shutdown(live.close)
        scheduler.start()
        try:
            async with assistants.running():
                yield
        finally:
            await scheduler.stop()
            await live.stop()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await db.close()

    allowed_methods = _allowed_methods(spec)  # read before Connexion works on the same data
    validators = validator_map(spec)
    request_headers = ["Authorization", "Content-Type", "X-Request-ID", *_request_headers(spec)]
    app = App(__name__, lifespan=lifespan, middlewares=swagger_ui.MIDDLEWARES)
    app.add_api(
        spec,
        resolver=RelativeResolver("handlers"),
        strict_validation=True,
        validate_responses=False,
        validator_map=validators,
        swagger_ui_options=SwaggerUIOptions(spec_path="/api/openapi.json", swagger_ui_path="/api/ui"),
    )
    for exception, handler in problems.HANDLERS:
        app.add_error_handler(exception, handler)
    app.add_error_handler(HTTPException, problems.http_exception_handler(allowed_methods))
    if settings.cors_origins:
        app.add_middleware(
            CORS,
            MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(settings.cors_origins),
            allow_methods=list(_METHODS),
            allow_headers=request_headers,
            expose_headers=["Location", "ETag", "Link", "Retry-After"],
            max_age=600,
        )
    # One set of guards around every route the process serves, /mcp included; MCP's tools call the
    # API through all of them.
    routes = RequestLimits(assistants.mounted_on(app), max_bytes=settings.max_body_bytes)
    guarded = WithState(RequestContext(ResponseHeaders(ErrorGuard(routes))), app_state)
    assistants.calling(guarded)
    return guarded


class WithState:
    """Gives every request (and the lifespan) the application's state, where handlers find it."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.install(scope)
        await self.app(scope, receive, send)


def contract(path: Path = CONTRACT) -> dict[str, Any]:
    """The contract as plain data; the JSON round trip unshares YAML aliases, which Connexion
    would otherwise mutate through one operation into another."""
    spec: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(path.read_text())))
    return spec


def _request_headers(spec: dict[str, Any]) -> list[str]:
    """Every header parameter the contract declares (If-Match, Idempotency-Key, …), for CORS."""
    return sorted(
        {parameter["name"] for parameter in spec["components"]["parameters"].values() if parameter["in"] == "header"}
    )


def _allowed_methods(spec: dict[str, Any]) -> Callable[[str], list[str]]:
    """The methods the contract declares for whichever path template matches a URL path."""
    paths = spec["paths"]
    table = []
    # A literal segment beats a parameter: /api/tasks/changes is not /api/tasks/{id}.
    for template, item in sorted(paths.items(), key=lambda entry: entry[0].count("{")):
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
        methods = [method for method in _METHODS if method.lower() in item]
        if "GET" in methods:
            methods.insert(1, "HEAD")  # Starlette answers HEAD wherever GET is routed
        table.append((pattern, methods))

    def allowed(path: str) -> list[str]:
        return next((methods for pattern, methods in table if pattern.match(path)), [])

    return allowed
