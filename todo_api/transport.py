"""Uvicorn's httptools protocol with a cap on the request line and headers, and read deadlines.

httptools buffers headers without limit, so a client could make the process hold megabytes
per connection. The cap sits well above the app's own limits (a 100 KB token must still reach
the app to be answered 401, other oversized headers 431); past it uvicorn answers 400 and closes.

Uvicorn has no read timeout of its own (only one for idle keep-alive connections), so a client
could hold a connection open forever by sending its request slowly, or nothing at all. Here the
request line and headers must arrive within HEAD_SECONDS of the connection (or of the request's
first byte), and a body may pause at most BODY_IDLE_SECONDS between two reads — as nginx's
client_header_timeout and client_body_timeout. A connection past either is closed.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 1 << 20
HEAD_SECONDS = 10
BODY_IDLE_SECONDS = 10


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _read_deadline: asyncio.TimerHandle | None = None
    _reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_within(HEAD_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_expecting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_body:
            self._expect_within(BODY_IDLE_SECONDS)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._expect_within(HEAD_SECONDS)

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

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
