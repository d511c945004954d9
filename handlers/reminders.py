"""This process's share of firing reminders: it asks the database for due ones twice a second.

Every process of every host does the same; the database hands each due reminder to exactly one
of them (persistence.reminders). A fired reminder is an entry in its owner's change feed, which
reaches their live streams on every host like any change; this process also wakes its own
streams of that user at once.
"""

from __future__ import annotations

import asyncio
import logging

from handlers.live import Live
from persistence import reminders
from persistence.database import Database
from persistence.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a reminder fires at most this long (and a round trip) after its time
BATCH = 100  # per transaction: the locks it holds, and how long, stay small under a flood


class Scheduler:
    def __init__(self, database: Database, live: Live, *, late_seconds: int) -> None:
        """Reminders fired more than `late_seconds` after their time are marked late: they fell
        due while no service ran (or while it was too busy to keep its promise)."""
        self._database = database
        self._live = live
        self._late_seconds = late_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            fired = await self._fire()
            for owner in set(fired):
                self._live.wake(owner)
            # Any fired, more may be due (other processes take their share of each batch, so a
            # batch here is rarely full): go on at once, after what else waits its turn.
            await asyncio.sleep(0 if fired else POLL_SECONDS)

    async def _fire(self) -> list[str]:
        try:
            return await reminders.fire_due(self._database, batch=BATCH, late_seconds=self._late_seconds)
        except DatabaseUnavailable:
            return []  # they stay due: the next round fires them
        except Exception as error:  # the scheduler must outlive anything one round can raise
            log.error("firing due reminders failed: %s", type(error).__name__)
            return []
