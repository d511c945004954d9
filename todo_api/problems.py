"""Every failure, turned into RFC 9457 problem+json, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from handlers.problems import CHALLENGE, FieldErrors, Problem
from persistence.errors import DatabaseUnavailable, FairShareExceeded, OutcomeUnknown
from persistence.tasks import IdempotencyKeyReused, PreconditionFailed, SearchTooCostly, TaskLimitReached
from todo_api.observability import DB_ERRORS, FAIR_SHARE_REFUSALS, shown_path

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = "2"
FAIR_SHARE_RETRY_AFTER_SECONDS = "1"
UNEXPECTED = "the server failed to answer this request"
# RFC 9457 §3.1.1 allows a type URI that is not a locator, such as a tag URI (RFC 4151).
OUTCOME_UNKNOWN = "tag:todo-api,2026:problems/outcome-unknown"
OUTCOME_UNKNOWN_DETAIL = (
    "the database stopped answering after this change was sent, so it may or may not have been made; "
    "retry with the same Idempotency-Key, or read before writing again"
)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that hung up before the answer


def body(status: int, detail: str, errors: FieldErrors | None = None, problem_type: str = "about:blank") -> bytes:
    content: dict[str, Any] = {
        "type": problem_type,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": detail,
    }
    if errors is not None:
        content["errors"] = list(errors)
    return orjson.dumps(content)


def response(
    status: int,
    detail: str,
    *,
    errors: FieldErrors | None = None,
    headers: dict[str, str] | None = None,
    problem_type: str = "about:blank",
) -> ConnexionResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", CHALLENGE)
    if status == 503:
        headers.setdefault("Retry-After", RETRY_AFTER_SECONDS)
    if status == 429:
        headers.setdefault("Retry-After", FAIR_SHARE_RETRY_AFTER_SECONDS)
    return ConnexionResponse(
        status_code=status, body=body(status, detail, errors, problem_type), content_type=MEDIA_TYPE, headers=headers
    )


async def answer(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    """Send the problem as the response, outside Connexion (the guards around every route, /mcp)."""
    problem = response(status, detail, headers=dict(headers or {}))
    await Response(problem.body, problem.status_code, problem.headers, media_type=problem.content_type)(
        scope, receive, send
    )


def problem_exception(_request: ConnexionRequest, error: ProblemException) -> ConnexionResponse:
    status = int(error.status)
    detail = str(error.detail or HTTPStatus(status).phrase)
    errors = getattr(error, "errors", None)
    if status == 400 and not isinstance(error, Problem):
        # Connexion's own 400s come from its parameter and body parsing; ours never reach here.
        status, errors = 422, errors or []
    return response(status, detail, errors=errors, headers=dict(error.headers or {}))


def http_exception_handler(allowed_methods: Callable[[str], list[str]]) -> Callable[..., ConnexionResponse]:
    """Starlette's routing errors, with an `Allow` taken from the contract rather than one route."""

    def http_exception(request: ConnexionRequest, error: HTTPException) -> ConnexionResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.url.path))
            detail = f"{request.method} is not allowed here; use {headers['Allow']}"
        elif error.status_code == 404:
            detail = f"no route matches {shown_path(request.url.path)}"
        else:
            detail = str(error.detail)
        return response(error.status_code, detail, headers=headers)

    return http_exception


def precondition_failed(_request: ConnexionRequest, _error: PreconditionFailed) -> ConnexionResponse:
    return response(412, "If-Match does not match the task's current ETag; fetch it again")


def idempotency_key_reused(_request: ConnexionRequest, _error: IdempotencyKeyReused) -> ConnexionResponse:
    detail = "this Idempotency-Key was already used with a different request body"
    return response(422, detail, errors=[{"field": "Idempotency-Key", "message": detail}])


def task_limit_reached(_request: ConnexionRequest, error: TaskLimitReached) -> ConnexionResponse:
    return response(409, f"you already hold {error.limit} tasks, the most one user may; delete some first")


def search_too_costly(_request: ConnexionRequest, error: SearchTooCostly) -> ConnexionResponse:
    """Not retried as a 503 would be: the same search over the same tasks costs the same again."""
    message = f"searching your tasks for this text took longer than {error.budget_ms} ms; narrow it with other filters"
    return response(422, f"q {message}", errors=[{"field": "q", "message": message}])


def database_unavailable(request: ConnexionRequest, error: DatabaseUnavailable) -> ConnexionResponse:
    """503 with Retry-After; a change whose commit was sent before the database stopped answering
    has a type of its own: unlike every other 503, it may have been made."""
    log.warning("database unavailable: %s", error)
    DB_ERRORS.inc()
    if isinstance(error, OutcomeUnknown) and request.method not in ("GET", "HEAD"):
        return response(503, OUTCOME_UNKNOWN_DETAIL, problem_type=OUTCOME_UNKNOWN)
    return response(503, "the database is unavailable; retry shortly")


def client_disconnected(request: ConnexionRequest, _error: ClientDisconnect) -> ConnexionResponse:
    """The client hung up mid-request: not a server fault, and nobody reads the answer."""
    log.info("client disconnected during %s %s", request.method, shown_path(request.url.path))
    return ConnexionResponse(status_code=CLIENT_CLOSED_REQUEST)


def fair_share_exceeded(_request: ConnexionRequest, _error: FairShareExceeded) -> ConnexionResponse:
    FAIR_SHARE_REFUSALS.inc()
    return response(429, "too many of your requests are using the database at once; retry shortly")


def unexpected(request: ConnexionRequest, error: Exception) -> ConnexionResponse:
    """A bug: one log line without stack trace, SQL or values, and a bare 500."""
    log.error("unhandled %s on %s %s", type(error).__name__, request.method, shown_path(request.url.path))
    return response(500, UNEXPECTED)


HANDLERS: tuple[tuple[type[Exception], Any], ...] = (
    (ProblemException, problem_exception),
    (PreconditionFailed, precondition_failed),
    (IdempotencyKeyReused, idempotency_key_reused),
    (TaskLimitReached, task_limit_reached),
    (SearchTooCostly, search_too_costly),
    (DatabaseUnavailable, database_unavailable),
    (ClientDisconnect, client_disconnected),
    (FairShareExceeded, fair_share_exceeded),
    (Exception, unexpected),
)
