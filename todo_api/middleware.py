"""ASGI middleware of our own: request limits, response headers, CORS answers, the last-resort error guard."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers import state
from handlers.auth import MAX_SUBJECT_CHARS
from handlers.problems import BadRequest, HeadersTooLarge, NotFound, PayloadTooLarge, Problem, UriTooLong
from todo_api import problems
from todo_api.observability import RATE_LIMIT_ADMISSIONS, shown_path

log = logging.getLogger(__name__)


MAX_URL_BYTES = 48 * 1024  # far above any schema-valid list query (cursor, tags, q and search, encoded)
MAX_HEADER_BYTES = 16 * 1024  # all headers but Authorization, whose oversize is the token's 401
MAX_ID_CHARS = MAX_SUBJECT_CHARS  # no task id (19 digits at most) or user id is longer
_NUMBER = re.compile(r"[+-]?[0-9]+")


class RequestLimits:
    """The limits every route of the process shares, the API's and /mcp's alike: 414 for a URL over
    MAX_URL_BYTES, 431 for headers over MAX_HEADER_BYTES, 400 for more than one Authorization
    header, 404 for a path segment too long to name anything, and 413 for a body over `max_bytes`:
    at once from Content-Length, or as soon as a chunked body crosses the limit — never reading more
    than that into memory. A problem raised here, or by a reader of the body, is answered here."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _Tracked(send)
        try:
            self._check(scope)
            await self.app(scope, self._limited(scope, receive), tracked)
        except Problem as problem:
            if tracked.started:
                raise
            await problems.answer(scope, receive, send, int(problem.status), str(problem.detail), problem.headers)

    def _check(self, scope: Scope) -> None:
        if len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) > MAX_URL_BYTES:
            raise UriTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes")
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"] if name != b"authorization")
        if header_bytes > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"the request headers are larger than {MAX_HEADER_BYTES} bytes")
        if sum(name == b"authorization" for name, _ in scope["headers"]) > 1:
            # RFC 9110 §5.3: single-valued; a gateway reading another one would disagree on the caller.
            raise BadRequest("send one Authorization header, not several")
        if any(len(segment) > MAX_ID_CHARS and _NUMBER.fullmatch(segment) for segment in scope["path"].split("/")):
            # Routing would convert it with int(), which refuses more than 4 300 digits.
            raise NotFound(f"no such id: a number of more than {MAX_ID_CHARS} digits names nothing here")
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            raise PayloadTooLarge(self._detail())

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self._detail())
            return message

        return limited_receive

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


class ResponseHeaders:
    """`X-Content-Type-Options: nosniff` on every response, `Cache-Control: no-store` on every
    answer to a request with credentials (no browser or shared cache keeps a user's tasks), and the
    caller's RateLimit fields on every answer to a request admitted by their rate limit (which
    learns here that the request's work is done). A
    redirect's `Location` is made relative: Starlette's (a trailing slash) would repeat the `Host`
    the client sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentials = any(name == b"authorization" for name, _ in scope["headers"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if credentials:
                    headers.setdefault("Cache-Control", "no-store")
                admitted = state.admission(scope)
                if admitted is not None:  # its work is done: the user's next request is not concurrent
                    admitted.release()
                    if admitted.quota is not None:
                        headers.update(admitted.quota.headers())
                if 300 <= message["status"] < 400 and "location" in headers:
                    target = urlsplit(headers["location"])
                    headers["Location"] = urlunsplit(("", "", target.path or "/", target.query, target.fragment))
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            if (admitted := state.admission(scope)) is not None:
                admitted.release()  # if it ended without an answer
                RATE_LIMIT_ADMISSIONS.labels(counted=str(admitted.counted).lower()).inc()


class CORS(CORSMiddleware):
    """Starlette's CORS, refusing a preflight it does not allow with problem+json and no CORS headers."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        detail = f"cross-origin request refused: {bytes(response.body).decode()}"
        return Response(problems.body(403, detail), status_code=403, media_type=problems.MEDIA_TYPE)


class ErrorGuard:
    """Outermost layer, for failures outside Connexion's exception middleware (CORS, lifespan):
    a bare 500 and one log line, as problems.unexpected does inside it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = _Tracked(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            path = shown_path(scope.get("path", ""))
            log.error("unhandled %s on %s %s", type(error).__name__, scope.get("method"), path)
            if scope["type"] != "http" or tracked.started:
                return
            body = problems.body(500, problems.UNEXPECTED)
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", problems.MEDIA_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class _Tracked:
    """`send`, noting whether the response has started: after that, nothing else can be answered."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)
