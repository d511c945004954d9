"""This process's open live streams, and what wakes them when their user's tasks change.

Streams hold no database connection while they wait: each waits on an event of its own, set
when its user's feed may have moved. One listener per process hears every change notified by
the database (persistence.notifications); a poller reads the heads of every user with an open
stream — often while notifications do not arrive (a transaction-mode pooler, a reconnect),
rarely while they do, as a net under a notification lost with its connection. A woken stream
reads the feed from its own position, so a spurious wake costs one query and a lost one only
delays: nothing a stream sends depends on a notification's content.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from handlers.problems import TooManyRequests
from persistence import changes
from persistence.database import Database
from persistence.errors import DatabaseUnavailable
from persistence.notifications import Listener

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # while notifications do not arrive
SAFETY_POLL_SECONDS = 5.0  # while they do


class Live:
    """Open streams by user, at most `max_per_user` each, and the wake-ups of their users."""

    def __init__(self, database: Database, *, listen_url: str, max_per_user: int) -> None:
        self._database = database
        self._listen_url = listen_url
        self.max_per_user = max_per_user
        self._streams: dict[str, set[Subscription]] = {}
        self._listener: Listener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._poll_now = asyncio.Event()
        self.closing = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether notifications reach this process now (else its streams are woken by polling)."""
        return self._listener is not None and self._listener.delivering

    @property
    def open_streams(self) -> int:
        return sum(len(subscriptions) for subscriptions in self._streams.values())

    def open(self, user_id: str) -> Subscription:
        """A stream of `user_id`'s, until its `close()`; 429 beyond the cap."""
        subscriptions = self._streams.setdefault(user_id, set())
        if len(subscriptions) >= self.max_per_user:
            raise TooManyRequests(
                f"you already have {self.max_per_user} live streams open here, the most one user may; "
                "close one (another tab) or retry later"
            )
        subscription = Subscription(self, user_id)
        subscriptions.add(subscription)
        return subscription

    def _release(self, subscription: Subscription) -> None:
        subscriptions = self._streams.get(subscription.user_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._streams[subscription.user_id]

    def wake(self, user_id: str) -> None:
        for subscription in self._streams.get(user_id, ()):
            subscription.wake.set()

    async def start(self) -> None:
        self._listener = Listener(
            self._listen_url, on_user=self.wake, send_probe=self._send_probe, on_delivering=self._delivering
        )
        self._tasks = [asyncio.create_task(self._listener.run()), asyncio.create_task(self._poll())]

    def close(self) -> None:
        """End every stream now (shutting down): their clients reconnect elsewhere."""
        self.closing.set()
        for user_id in self._streams:
            self.wake(user_id)

    async def stop(self) -> None:
        self.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _send_probe(self, payload: str) -> None:
        await self._database.run(
            None,
            "SELECT pg_notify(%(channel)s, %(payload)s)",
            {
                "channel": changes.CHANNEL,
                "payload": payload,
            },
        )

    def _delivering(self, delivering: bool) -> None:
        # Poll at once either way: for changes notified while no connection listened, or, once
        # notifications stop, for those the connection missed while it went unnoticed deaf (a
        # silent primary); then at the pace `listening` now asks for.
        self._poll_now.set()

    async def _poll(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), SAFETY_POLL_SECONDS if self.listening else POLL_SECONDS)
            self._poll_now.clear()
            await self._poll_once()

    async def _poll_once(self) -> None:
        users = list(self._streams)
        if not users:
            return
        try:
            heads = await changes.heads(self._database, users)
        except DatabaseUnavailable:
            return  # the streams' own reads fail too; the next poll tries again
        except Exception as error:  # the poller must outlive anything one query can raise
            log.error("polling the heads of live streams failed: %s", type(error).__name__)
            return
        for user_id, head in heads.items():
            for subscription in self._streams.get(user_id, ()):
                if head > subscription.head:
                    subscription.wake.set()


class Subscription:
    """One open stream: `wake` is set when its user's feed may have moved past `head` (the newest
    number the stream has read up to), or when streams end."""

    def __init__(self, live: Live, user_id: str) -> None:
        self.live = live
        self.user_id = user_id
        self.wake = asyncio.Event()
        self.head = -1

    def close(self) -> None:
        self.live._release(self)
