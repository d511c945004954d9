"""Each user's request rate, per process: a token bucket (GCRA), decided right after the token is
verified — a Server-Sent Events stream counts once, when it opens.

A request counts when it arrives while another of the same user's requests is being worked on
(admitted, not yet answering): that is the load that delays other users. A client that waits for
each answer before sending the next holds at most one request's worth of the process, and is
never slowed (a test suite, a sync script); a frontend's burst or a flood on many connections is.

A counted request beyond the bucket waits for its token when that comes within `max_wait` (as
nginx's `limit_req ... delay`); otherwise it is held for `max_wait` and refused with 429. Holding
costs a timer, not CPU, and bounds a flood: a client with N connections gets at most N refusals
per `max_wait` to parse and answer, whatever its speed.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass

POLICY = "default"


@dataclass(frozen=True, slots=True)
class Quota:
    """What the IETF RateLimit fields say of one user's bucket after a request."""

    burst: int
    window_seconds: int  # the time the bucket takes to fill from empty
    remaining: int
    reset_seconds: int  # until the bucket is full again

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.burst};w={self.window_seconds}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_seconds}',
        }


class RateLimited(Exception):
    """The user's bucket had no token within the wait; retry after `retry_after` seconds."""

    def __init__(self, quota: Quota, retry_after: int) -> None:
        super().__init__(retry_after)
        self.quota = quota
        self.retry_after = retry_after


class Admission:
    """An admitted request: whether it was counted (took a token), its user's quota, and the end of
    its work (`release`, idempotent), once it starts answering or ends."""

    def __init__(self, limiter: RateLimiter, user: str, *, counted: bool) -> None:
        self._limiter = limiter
        self._user = user
        self._released = False
        self.counted = counted
        self.quota: Quota | None = None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.done(self._user)


class RateLimiter:
    """`per_second` counted requests per user on average, `burst` of them at once."""

    def __init__(self, per_second: float, burst: int, max_wait: float) -> None:
        self._interval = 1 / per_second
        self._burst = burst
        self._tolerance = (burst - 1) * self._interval
        self._max_wait = max_wait
        self._window = math.ceil(burst * self._interval)
        self._due: dict[str, float] = {}  # each user's theoretical arrival time (GCRA's TAT)
        self._forget_above = 1024
        self._working: Counter[str] = Counter()  # each user's requests admitted or waiting, not answering yet

    async def admit(self, user: str) -> Admission:
        """Admit a request of `user`: counted (and maybe made to wait) if another of theirs is being
        worked on; RateLimited when its token would come too late."""
        counted = self._working[user] > 0
        self._working[user] += 1
        admission = Admission(self, user, counted=counted)
        try:
            if counted:
                admission.quota = await self._take(user)
            else:
                now = _now()
                admission.quota = self._quota(self._due.get(user, now), now)
        except BaseException:
            admission.release()
            raise
        return admission

    def done(self, user: str) -> None:
        self._working[user] -= 1
        if not self._working[user]:
            del self._working[user]

    async def _take(self, user: str) -> Quota:
        """Take one of `user`'s tokens, waiting for it briefly if it is not there yet; RateLimited when
        it would come too late."""
        now = _now()
        due = max(self._due.get(user, now), now)
        start = due - self._tolerance  # when this request may start
        if start > now + self._max_wait:
            await asyncio.sleep(self._max_wait)
            retry_after = max(1, math.ceil(start - _now()))
            raise RateLimited(self._quota(self._due.get(user, due), _now()), retry_after)
        self._due[user] = due + self._interval
        self._forget_full_buckets(now)
        if start > now:
            await asyncio.sleep(start - now)
        return self._quota(self._due[user], max(now, start))

    def _quota(self, due: float, now: float) -> Quota:
        used = max(0.0, due - now)
        remaining = max(0, self._burst - math.ceil(used / self._interval - 1e-9))
        return Quota(self._burst, self._window, remaining, math.ceil(used))

    def _forget_full_buckets(self, now: float) -> None:
        """Drop the users whose bucket is full again: they are as if new. Amortised: only when the
        table has doubled since the last time."""
        if len(self._due) <= self._forget_above:
            return
        self._due = {user: due for user, due in self._due.items() if due > now}
        self._forget_above = max(1024, 2 * len(self._due))


def _now() -> float:
    return asyncio.get_running_loop().time()
