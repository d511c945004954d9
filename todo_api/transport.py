"""Uvicorn's httptools protocol with a cap on the request line and headers, and read deadlines.

httptools buffers headers without limit, so a client could make the process hold megabytes
per connection. The cap sits well above the app's own limits (a 100 KB token must still reach
the app to be answered 401, other oversized headers 431); past it uvicorn answers 400 and closes.

Uvicorn has no read timeout of its own (only one for idle keep-alive connections), so a client
could hold a connection open forever by sending its request slowly, or nothing at all. Here the
request line and headers must arrive within HEAD_SECONDS of the connection (or of the request's
first byte), a body may pause at most BODY_IDLE_SECONDS between two reads — as nginx's
client_header_timeout and client_body_timeout — and the whole request, head and body, must arrive
within REQUEST_TIMEOUT_SECONDS of its first byte (a body trickled a byte every few seconds would
meet the other two for ever). A connection past any of them is closed. None of them bounds the
answer: a long response (an event stream) is the application's to end.

Each process holds at most MAX_CONNECTIONS connections; a request on one beyond them is answered
503 with Retry-After and the connection closed (uvicorn's own `limit_concurrency` counts running
requests too, and answers in plain text).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from todo_api import problems
from todo_api.settings import Settings, load

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 1 << 20
HEAD_SECONDS = 10
BODY_IDLE_SECONDS = 10
_on_shutdown: list[Callable[[], None]] = []


def on_shutdown(callback: Callable[[], None]) -> None:
    """Call `callback` when the server begins its graceful shutdown (SIGTERM), before it waits for
    answers in progress to end: long-lived ones (live streams) must end themselves then."""
    _on_shutdown.append(callback)


OVER_CAPACITY_LOG_SECONDS = 60  # one warning per this long while connections are refused


@functools.cache
def _settings() -> Settings:
    return load()  # the worker's, as create_app read and checked them


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _read_deadline: asyncio.TimerHandle | None = None
    _request_deadline: asyncio.TimerHandle | None = None
    _reading_body = False
    _warned_at = -float(OVER_CAPACITY_LOG_SECONDS)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > _settings().max_connections:
            self.app = _over_capacity  # this connection's requests only
            self._warn_over_capacity()
        self._expect_within(HEAD_SECONDS)

    def shutdown(self) -> None:
        while _on_shutdown:
            _on_shutdown.pop()()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_expecting()
        self._end_request_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_body:
            self._expect_within(BODY_IDLE_SECONDS)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._expect_within(HEAD_SECONDS)
        self._end_request_deadline()
        self._request_deadline = self.loop.call_later(_settings().request_timeout_seconds, self._too_slow)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._reading_body = True
        self._expect_within(BODY_IDLE_SECONDS)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_body = False
        self._stop_expecting()  # the answer is the app's to bound now
        self._end_request_deadline()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request head too large")

    def _expect_within(self, seconds: float) -> None:
        self._stop_expecting()
        self._read_deadline = self.loop.call_later(seconds, self._too_slow)

    def _stop_expecting(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _end_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    @classmethod
    def _warn_over_capacity(cls) -> None:
        if time.monotonic() - cls._warned_at >= OVER_CAPACITY_LOG_SECONDS:
            cls._warned_at = time.monotonic()
            log.warning("refusing connections beyond MAX_CONNECTIONS=%d", _settings().max_connections)


async def _over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    detail = "the server holds as many connections as it may; retry shortly"
    await problems.answer(scope, receive, send, 503, detail, {"Connection": "close", "Retry-After": "1"})
