"""The change feed (`GET /api/tasks/changes`) and the live stream of it (`GET /api/tasks/events`).

A change token names a position in the caller's feed: the epoch of their sequence, the number
of the last change the client has, when the token was issued, and — while a snapshot is being
paged — the head the snapshot started at (deletions and reminders before it are not sent).
Tokens are signed and bound to their user like list cursors (handlers.cursors).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from connexion import request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from handlers import cursors, state
from handlers.live import Subscription
from handlers.problems import BadRequest, Gone, Unauthorized
from handlers.responses import json_response
from handlers.signing import Keyring
from handlers.state import AppState
from handlers.tasks import render
from persistence import changes
from persistence.changes import Page
from persistence.errors import DatabaseUnavailable, FairShareExceeded
from persistence.tasks import NAMES

DEFAULT_LIMIT = 100
STREAM_PAGE = 500
RETRY_SECONDS = 1.0  # a stream whose read failed (the database is away) tries again after this
KEEP_ALIVE = b": keep-alive\n\n"
_DAY = 86400
_TOO_OLD = "this token is older than the changes kept; start again without since"


@dataclass(frozen=True, slots=True)
class Position:
    epoch: int
    seq: int
    history: int | None  # the log (deletions, reminders) is sent only after it; None: the head, now


async def find(user: str, since: str | None = None, limit: int | None = None) -> Response:
    """One page of the caller's changes after `since` (or of a snapshot), with the token to go on."""
    app = state.of(request.scope)
    position = _decode(app, user, since)
    limit = limit or DEFAULT_LIMIT
    page = await _read(app, user, position, limit + 1)
    entries = page.entries[:limit]
    more = len(page.entries) > limit
    after = Position(page.head.epoch, entries[-1]["seq"], page.history) if more else _caught_up(page)
    body = {
        "changes": [_entry(row) for row in entries],
        "next": _encode(app.change_keys, user, after),
        "more": more,
    }
    return json_response(body)


async def stream(user: str, token_info: dict[str, Any], since: str | None = None) -> Response:
    """Server-Sent Events: what the caller missed after `Last-Event-ID` (or `since`), then each
    change as it commits, until the token expires (`event: expired`), the stream has lasted
    STREAM_MAX_SECONDS or the process shuts down; a comment line keeps it open in between."""
    app = state.of(request.scope)
    expires = float(token_info["exp"])
    if expires <= time.time():  # accepted within JWT_LEEWAY_SECONDS, but a stream needs a live one
        raise Unauthorized("the token has expired")
    start = request.headers.get("last-event-id") or since
    subscription = app.live.open(user)
    try:
        if start:
            position = _decode(app, user, start)
            first = await _read(app, user, position, STREAM_PAGE)
        else:
            head = await changes.head(app.database, user)
            position, first = Position(head.epoch, head.seq, head.seq), Page(head, head.seq, [])
    except BaseException:
        subscription.close()
        raise
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # what a GET would answer, without holding a stream open
        subscription.close()
        return Response(headers=headers, media_type=EventStream.media_type)
    ends = time.time() + app.stream_max_seconds
    events = _events(app, user, position, first, subscription, min(expires, ends), expired=expires <= ends)
    return EventStream(events, on_end=subscription.close, headers=headers)


class EventStream(StreamingResponse):
    """A text/event-stream answer that calls `on_end` once the stream is over, however it ends."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, on_end: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(content, headers=headers)
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()


async def _events(
    app: AppState,
    user: str,
    position: Position,
    page: Page | None,
    subscription: Subscription,
    deadline: float,
    *,
    expired: bool,
) -> AsyncIterator[bytes]:
    """The stream's body: `page`, then a page per wake-up; `expired` says whether reaching
    `deadline` means the token expired (else the stream has lasted long enough). A comment line
    goes out whenever nothing else has for the heartbeat, also while the database is away: while
    reads fail, and while one waits on a database that does not answer."""
    live, wake = app.live, subscription.wake
    quiet = _Quiet(app.stream_heartbeat_seconds)
    yield quiet.sent(b": connected\n\n")
    while True:
        more = False
        if page is not None:
            for row in page.entries:
                position = Position(page.head.epoch, row["seq"], page.history)
                yield quiet.sent(_event(row["kind"], _encode(app.change_keys, user, position), _entry(row)))
            more = len(page.entries) == STREAM_PAGE
            if not more:
                position = _caught_up(page)
                subscription.head = page.head.seq
        if not more:
            # Until woken (or, after a failed read, RETRY_SECONDS).
            retry_at = None if page is not None else time.monotonic() + RETRY_SECONDS
            while not live.closing.is_set():
                left = deadline - time.time()
                if left <= 0:
                    if expired:
                        yield _event("expired", None, {"detail": "the token has expired; reconnect with a fresh one"})
                    return
                timeout = min(quiet.left(), left)
                if retry_at is not None:
                    timeout = min(timeout, max(0.0, retry_at - time.monotonic()))
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                    break
                except TimeoutError:
                    if not quiet.left():
                        yield quiet.sent(KEEP_ALIVE)
                    if retry_at is not None and time.monotonic() >= retry_at:
                        break
            if live.closing.is_set():
                return
            wake.clear()
        reading = asyncio.ensure_future(_read(app, user, position, STREAM_PAGE))
        async for comment in _meanwhile(reading, quiet):
            yield comment
        try:
            page = reading.result()
        except (DatabaseUnavailable, FairShareExceeded):
            page = None
        except Gone:
            return  # the client reconnects with its Last-Event-ID and is told to start again


class _Quiet:
    """How long until a stream that has sent nothing since its last chunk owes a comment line."""

    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self.since = time.monotonic()

    def left(self) -> float:
        return max(0.0, self.since + self.heartbeat - time.monotonic())

    def sent(self, chunk: bytes) -> bytes:
        self.since = time.monotonic()
        return chunk


async def _meanwhile(work: asyncio.Future[Any], quiet: _Quiet) -> AsyncIterator[bytes]:
    """Comment lines as the heartbeat asks, until `work` is done (a read can wait on the database
    up to its deadline); `work` is cancelled if the stream ends first."""
    try:
        while not work.done():
            await asyncio.wait((work,), timeout=quiet.left())
            if not work.done() and not quiet.left():
                yield quiet.sent(KEEP_ALIVE)
    finally:
        if not work.done():
            work.cancel()
            work.add_done_callback(lambda task: task.cancelled() or task.exception())


async def _read(app: AppState, user: str, position: Position, limit: int) -> Page:
    """The page after `position`; 410 when the feed can no longer say what changed since it."""
    page = await changes.read(app.database, user, since=position.seq, history=position.history, limit=limit)
    head = page.head
    if position.seq and position.epoch != head.epoch:
        raise Gone("the change feed has started again since this token was issued; start again without since")
    if position.seq > head.seq or max(position.seq, page.history) < head.floor:
        raise Gone(_TOO_OLD)
    return page


def _caught_up(page: Page) -> Position:
    """Where a client stands once it has every change of `page`, the last one there was."""
    return Position(page.head.epoch, page.head.seq, page.head.seq)


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["kind"]
    if kind == "delete":
        return {"type": "delete", "id": row["id"]}
    entry = {"type": kind, "task": render({name: row[name] for name in NAMES})}
    if kind == "reminder":
        entry["late"] = bool(row["late"])
    return entry


def _event(kind: str, token: str | None, data: Any) -> bytes:
    identifier = f"id: {token}\n" if token else ""
    return f"{identifier}event: {kind}\ndata: {orjson.dumps(data, option=orjson.OPT_UTC_Z).decode()}\n\n".encode()


def _encode(keys: Keyring, user: str, position: Position) -> str:
    payload = [position.epoch, position.seq, int(time.time())]
    if position.history is not None and position.history > position.seq:
        payload.append(position.history)
    return cursors.encode(keys, payload, user_id=user, query={})


def _decode(app: AppState, user: str, token: str | None) -> Position:
    """The position `token` names (a snapshot's start without one); 400 if it is not the caller's
    token, 410 if it is older than CHANGES_RETENTION_DAYS."""
    if token is None:
        return Position(0, 0, None)
    payload = cursors.decode(app.change_keys, token, user_id=user, query={}, what="the token", bound="this user")
    if not (3 <= len(payload) <= 4 and all(isinstance(value, int) for value in payload)):
        raise BadRequest("the token is not valid")
    epoch, seq, issued, *history = payload
    if time.time() - issued > app.changes_retention_days * _DAY:
        raise Gone(_TOO_OLD)
    return Position(epoch, seq, history[0] if history else seq)
