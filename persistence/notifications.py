"""LISTEN on the feed's channel: one session connection per process, for all its live streams.

A transaction-mode pooler (PgBouncer, Neon's `-pooler`) cannot deliver notifications to a session
that is idle between transactions, so the connection proves itself: once listening, it asks for a
probe notification to be sent through the ordinary pool, and counts as `delivering` only once the
probe has arrived on it. Until then, and whenever the connection is lost, the caller polls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import psycopg

from persistence.changes import CHANNEL
from persistence.libpq import conninfo

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0  # a probe not back by then is lost
PROBES = 3  # lost one after another: notifications do not reach this connection
CHECK_SECONDS = 5.0  # an idle connection is asked a question this often, to notice a silent peer
ANSWER_SECONDS = 3.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # waits between attempts to connect again
PROBE_PREFIX = "\x1fprobe:"  # no user id starts so (the payload of a real change is its user's id)


class Listener:
    """Calls `on_user(user_id)` for each change notified, while `run` runs (until cancelled).

    `send_probe(payload)` must send a notification on CHANNEL through another connection;
    `on_delivering(flag)` hears when notifications start and stop arriving here."""

    def __init__(
        self,
        url: str,
        *,
        on_user: Callable[[str], None],
        send_probe: Callable[[str], Awaitable[None]],
        on_delivering: Callable[[bool], None],
    ) -> None:
        self._conninfo = conninfo(url)
        self._on_user = on_user
        self._send_probe = send_probe
        self._on_delivering = on_delivering
        self.delivering = False

    async def run(self) -> None:
        failures = 0  # attempts in a row that never got as far as delivering
        while True:
            try:
                await self._listen()
                return  # notifications cannot reach this connection: the caller polls
            except (psycopg.Error, OSError, TimeoutError) as error:
                if self.delivering:
                    failures = 0
                    log.warning("listening for changes stopped (%s); polling meanwhile", type(error).__name__)
                self._set_delivering(False)
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            for _ in range(PROBES):
                if await self._probe(connection):
                    break
            else:
                log.warning(
                    "notifications sent through DATABASE_URL do not reach a listening session (a "
                    "transaction-mode pooler?): live streams poll for changes instead; set "
                    "LISTEN_DATABASE_URL to a direct connection to receive them at once"
                )
                return
            self._set_delivering(True)
            while True:
                async for notify in connection.notifies(timeout=CHECK_SECONDS):
                    self._deliver(notify.payload)
                await _answers(connection)

    async def _probe(self, connection: psycopg.AsyncConnection[object]) -> bool:
        """Whether a notification sent through the pool arrives here; an error if it cannot be sent."""
        payload = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        sending = asyncio.ensure_future(self._send_probe(payload))
        arrived = False
        try:
            async for notify in connection.notifies(timeout=PROBE_SECONDS):
                if notify.payload == payload:
                    arrived = True
                    break
                self._deliver(notify.payload)
        finally:
            if not sending.done():
                sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        failure = None if arrived or sending.cancelled() else sending.exception()
        if failure is not None:
            raise ConnectionError("the probe could not be sent") from failure
        return arrived

    def _deliver(self, payload: str) -> None:
        if not payload.startswith(PROBE_PREFIX):
            self._on_user(payload)

    def _set_delivering(self, delivering: bool) -> None:
        if delivering != self.delivering:
            self.delivering = delivering
            self._on_delivering(delivering)


async def _answers(connection: psycopg.AsyncConnection[object]) -> None:
    """A round trip on `connection` within ANSWER_SECONDS; else the connection is closed and
    TimeoutError raised at once. Cancelling the query instead would wait seconds more on a silent
    server (psycopg sends a cancel request, then waits for the query to end), all the while
    counting as delivering."""
    check = asyncio.ensure_future(connection.execute("SELECT 1"))
    try:
        done, _ = await asyncio.wait((check,), timeout=ANSWER_SECONDS)
    finally:
        if not check.done():  # no answer in time, or the listener is being stopped
            await connection.close()  # first: a closed connection has no query for psycopg to cancel
            check.cancel()
            check.add_done_callback(lambda task: task.cancelled() or task.exception())
    if not done:
        raise TimeoutError
    check.result()
