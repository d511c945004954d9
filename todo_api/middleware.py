"""ASGI middleware of our own: request limits, response headers, CORS answers, the last-resort error guard."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers.problems import BadRequest, HeadersTooLarge, PayloadTooLarge, UriTooLong
from todo_api import problems

log = logging.getLogger("todo_api")


MAX_URL_BYTES = 48 * 1024  # far above any schema-valid list query (cursor, tags, q and search, encoded)
MAX_HEADER_BYTES = 16 * 1024  # all headers but Authorization, whose oversize is the token's 401


class RequestLimits:
    """414 for a URL over MAX_URL_BYTES, 431 for headers over MAX_HEADER_BYTES, 400 for more than
    one Authorization header, and 413 for a body over `max_bytes`: at once from Content-Length, or
    as soon as a chunked body crosses the limit — never reading more than that into memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) > MAX_URL_BYTES:
            raise UriTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes")
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"] if name != b"authorization")
        if header_bytes > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"the request headers are larger than {MAX_HEADER_BYTES} bytes")
        if sum(name == b"authorization" for name, _ in scope["headers"]) > 1:
            # RFC 9110 §5.3: single-valued; a gateway reading another one would disagree on the caller.
            raise BadRequest("send one Authorization header, not several")
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            raise PayloadTooLarge(self._detail())
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


class ResponseHeaders:
    """`X-Content-Type-Options: nosniff` on every response, and `Cache-Control: no-store` on every
    answer to a request with credentials: no browser or shared cache keeps a user's tasks."""

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
            await send(message)

        await self.app(scope, receive, with_headers)


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
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            log.error("unhandled %s on %s %s", type(error).__name__, scope.get("method"), scope.get("path"))
            if scope["type"] != "http" or started:
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
