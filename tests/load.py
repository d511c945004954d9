"""A bounded write load that records every request: each one creates a task with a title of its own,
so the database can be audited afterwards for acknowledged writes that were lost and for stored
writes that were never acknowledged."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class Outcome:
    """One create: its title, when it was sent and answered (monotonic seconds), and the answer."""

    title: str
    user: str
    started: float
    ended: float
    status: int | None  # None: no answer (connection error or timeout)
    retry_after: str | None
    detail: str | None = None  # an error's problem+json detail, or the failure's exception name

    @property
    def in_doubt(self) -> bool:
        """The write may or may not have been committed: no answer, or a server error."""
        return self.status is None or self.status >= 500


class WriteLoad:
    """`workers` threads, one user each, creating tasks through `base_url` until stopped, `limit`
    requests in all, or `seconds` elapsed — whichever comes first."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[str], str],
        *,
        workers: int = 4,
        limit: int = 20_000,
        seconds: float = 300,
        timeout: float = 15,
    ) -> None:
        self.outcomes: list[Outcome] = []
        self.users = [f"load-{uuid.uuid4().hex[:10]}" for _ in range(workers)]
        self._base_url = base_url
        self._token = token
        self._timeout = timeout
        self._budget = limit
        self._until = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(user,), daemon=True) for user in self.users]

    def __enter__(self) -> WriteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_until(self, condition: Callable[[list[Outcome]], bool], *, timeout: float, what: str) -> float:
        """Poll until `condition(outcomes so far)` holds; the monotonic time it did. AssertionError
        naming `what` (and the answers so far) after `timeout` seconds or when the load has ended."""
        deadline = time.monotonic() + timeout
        while True:
            outcomes = self.snapshot()
            if condition(outcomes):
                return time.monotonic()
            ended = not any(thread.is_alive() for thread in self._threads)
            if ended or time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s; answers so far {statuses(outcomes)}")
            time.sleep(0.05)

    def _write(self, user: str) -> None:
        headers = {"Authorization": f"Bearer {self._token(user)}"}
        with httpx.Client(base_url=self._base_url, headers=headers, timeout=self._timeout) as client:
            while not self._stop.is_set() and time.monotonic() < self._until and self._take():
                title = f"{user}-{uuid.uuid4().hex[:12]}"
                started = time.monotonic()
                detail = None
                try:
                    response = client.post("/api/tasks", json={"title": title})
                    status: int | None = response.status_code
                    retry_after = response.headers.get("retry-after")
                    if response.is_error:
                        detail = _detail(response)
                except httpx.TransportError as error:
                    status, retry_after, detail = None, None, type(error).__name__
                with self._lock:
                    self.outcomes.append(Outcome(title, user, started, time.monotonic(), status, retry_after, detail))
                if status is None or status >= 500:
                    time.sleep(0.1)  # an error may come back at once: pause as a client would, don't spin

    def _take(self) -> bool:
        with self._lock:
            self._budget -= 1
            return self._budget >= 0


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:80]


def errors(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """How many failures of each status and detail."""
    return dict(Counter(f"{o.status}: {o.detail}" for o in outcomes if o.status != 201 and o.status != 200))


def statuses(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """How many answers of each status ('none': no answer)."""
    return dict(Counter("none" if o.status is None else str(o.status) for o in outcomes))


def audit(outcomes: Iterable[Outcome], stored: set[str]) -> tuple[set[str], set[str]]:
    """(lost, phantom): acknowledged titles missing from `stored`, and stored titles that were
    neither acknowledged nor in doubt."""
    outcomes = list(outcomes)
    acknowledged = {o.title for o in outcomes if o.status == 201}
    in_doubt = {o.title for o in outcomes if o.in_doubt}
    return acknowledged - stored, stored - acknowledged - in_doubt
