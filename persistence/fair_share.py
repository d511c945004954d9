"""Each user's fair share of one process's database connections (SPEC "Bounds")."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from persistence.errors import DatabaseUnavailable, FairShareExceeded

FAIR_SHARE_WAIT_SECONDS = 2.0  # a user over their share waits this long for a slot, then 429
FAIR_SHARE_CHECK_SECONDS = 0.1  # how often a request waiting for its share looks up


class Serving(Protocol):
    """What the share needs to know of the database it shares out."""

    unreachable: str | None  # why the last attempt to connect failed; None once one succeeds

    def answered_since(self, moment: float) -> bool: ...


class FairShare:
    """Who may go for a connection. A user with fewer than `limit` units of work under way goes at
    once. Beyond that share a user may borrow, work-conserving, while no other user has had work in
    this process lately and at most half the pool (never less than the share) is lent: the rest
    stays for whoever comes next. Otherwise the request waits its turn, oldest first; after
    FAIR_SHARE_WAIT_SECONDS it is refused (FairShareExceeded, a 429) only if other users were
    served meanwhile and the database answered: when the database is the cause, it waits on until
    the deadline (DatabaseUnavailable, a 503)."""

    def __init__(self, limit: int | None, pool_size: int) -> None:
        self.limit = limit
        self._lendable = max(limit or 0, pool_size // 2)
        self._held: Counter[str] = Counter()  # units of work under way, by user
        self._under_way = 0
        self._last_start: dict[str, float] = {}  # when each user lately started a unit of work
        self._forget_above = 1024
        self._waiting: deque[tuple[str, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def slot(self, user_id: str | None, deadline: float, database: Serving) -> AsyncIterator[None]:
        if user_id is None or self.limit is None:
            yield
            return
        if self._may_start(user_id):
            self._start(user_id)
        else:
            await self._wait(user_id, deadline, database)
        try:
            yield
        finally:
            self._end(user_id)

    def _may_start(self, user_id: str) -> bool:
        assert self.limit is not None
        if self._held[user_id] < self.limit:
            return True
        return self._under_way < self._lendable and not self._others_active(user_id)

    def _others_active(self, user_id: str) -> bool:
        """Whether a user other than `user_id` has work under way, waiting, or started lately."""
        if len(self._held) > (user_id in self._held) or any(user != user_id for user, _ in self._waiting):
            return True
        self._forget_before(_now() - FAIR_SHARE_WAIT_SECONDS)
        return len(self._last_start) > (user_id in self._last_start)

    def _forget_before(self, moment: float) -> None:
        self._last_start = {user: started for user, started in self._last_start.items() if started > moment}
        self._forget_above = max(1024, 2 * len(self._last_start))

    def _start(self, user_id: str) -> None:
        self._held[user_id] += 1
        self._under_way += 1
        self._last_start[user_id] = _now()
        if len(self._last_start) > self._forget_above:  # amortised: only when it has doubled
            self._forget_before(_now() - FAIR_SHARE_WAIT_SECONDS)

    def _end(self, user_id: str) -> None:
        self._held[user_id] -= 1
        if not self._held[user_id]:
            del self._held[user_id]
        self._under_way -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Start every waiting request that may start now, oldest first."""
        for entry in list(self._waiting):
            user_id, admitted = entry
            if not admitted.done() and self._may_start(user_id):
                self._waiting.remove(entry)
                self._start(user_id)
                admitted.set_result(None)

    async def _wait(self, user_id: str, deadline: float, database: Serving) -> None:
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (user_id, admitted)
        self._waiting.append(entry)
        since = _now()
        try:
            while True:
                # Look up now and then: other users' work ends without handing anything on.
                await asyncio.wait((admitted,), timeout=min(FAIR_SHARE_CHECK_SECONDS, max(0.0, deadline - _now())))
                if admitted.done():
                    return
                if _now() >= deadline:
                    raise DatabaseUnavailable("timeout: the deadline passed waiting for the user's share")
                if database.unreachable is not None:
                    raise DatabaseUnavailable(database.unreachable)
                held_back = self._others_active(user_id) and database.answered_since(since)
                if _now() - since >= FAIR_SHARE_WAIT_SECONDS and held_back:
                    raise FairShareExceeded()
                self._hand_on()
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif admitted.done():
                self._end(user_id)  # admitted as it gave up (cancelled): the slot goes on at once
            raise


def _now() -> float:
    return asyncio.get_running_loop().time()
