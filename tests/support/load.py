"""The bench's mix as a careful client sends it, and an audit of the database against what the
client was told.

Each worker is one user sending one request at a time: bench/workload.lua's mix with deletions
carved out of the lists — 45 % list (`limit=50`), 20 % get, 15 % create, 10 % complete, 5 %
update, 5 % delete. Every write is safe to send again: a create carries an `Idempotency-Key`;
a completion or an update names the value it sets and, like a delete, the task's `ETag` in
`If-Match`. A 503, a 429 or no answer is sent again unchanged, after `Retry-After`, until a final
answer comes, so no write is left in doubt. Each worker keeps a replica of its user's tasks built
from the answers alone and checks every read against it; `audit` then compares the replicas with
the database.

A write whose attempt was in doubt (a 5xx or no answer) shows on its retry that it had committed
anyway: a create is answered by the replay of the first (`Idempotent-Replayed`), a conditional
write by 412 with the task as that write left it, a delete by 404. Those are counted as
`in_doubt_committed`, and excuse nothing: a stored task is either in a replica or counted.

With `remind_every`, each worker makes one create in that many seconds carry a `remind_at` a few
seconds ahead, and leaves those tasks alone (it lists and reads them, never changes or deletes
them), so each such reminder must fire once at its time: `reminders` lists them.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

OPERATIONS = {"list": 45, "get": 20, "create": 15, "complete": 10, "update": 5, "delete": 5}
LIST_LIMIT = 50
GIVE_UP_SECONDS = 120  # an operation still without a final answer after this long is unresolved
NO_ANSWER_PAUSE = 0.5  # before sending again when nothing came back (no Retry-After to follow)
RETRY_AFTER_CAP = 5.0
REMIND_AHEAD = (1.0, 6.0)  # seconds from a create to the reminder it carries, drawn uniformly


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request sent: when (monotonic seconds), the answer, and whether it repeats a write
    whose earlier attempt was in doubt."""

    operation: str  # a key of OPERATIONS
    user: str
    started: float
    ended: float
    status: int | None  # None: no answer (connection error or the client's timeout)
    retry_after: str | None
    detail: str | None = None  # an error's problem+json detail, or the failure's exception name
    after_doubt: bool = False

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def expected(self) -> bool:
        """2xx, 503, 429, no answer — or the answer a retry gets when its in-doubt attempt committed."""
        if self.status is None or 200 <= self.status < 300 or self.status in (429, 503):
            return True
        return self.confirms_commit

    @property
    def confirms_commit(self) -> bool:
        """The answer of a retry whose in-doubt attempt had committed: 412 for a conditional write
        (the worker then checks the task is as that write left it), 404 for a delete."""
        confirms = {"complete": 412, "update": 412, "delete": 404}.get(self.operation)
        return self.after_doubt and self.status == confirms


@dataclass(frozen=True, slots=True)
class Task:
    """A task as its user last learnt it; `tag` (its create's Idempotency-Key, stored as its
    description) never changes, so copies of one create can be told apart from other tasks."""

    tag: str
    title: str
    completed: bool


Replica = dict[int, Task]  # a user's tasks by id


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder an acknowledged create set, on a task nothing changes afterwards."""

    user: str
    task_id: int
    remind_at: datetime


@dataclass(frozen=True)
class Audit:
    acknowledged: int  # writes whose outcome the client knows: answered, or confirmed by a retry
    lost: int  # acknowledged tasks missing from the database, or stored otherwise than acknowledged
    duplicates: int  # extra rows of one create
    phantom: int  # stored tasks the client does not hold: never acknowledged, or acknowledged deleted
    in_doubt_committed: int  # writes answered 5xx or not at all that had committed all the same

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.phantom)

    def line(self) -> str:
        return (
            f"acknowledged={self.acknowledged} lost={self.lost} duplicates={self.duplicates} "
            f"phantom={self.phantom} in_doubt_committed={self.in_doubt_committed}"
        )


class MixedLoad:
    """`workers` threads, one user each, sending the mix through `base_url` from `__enter__` until
    `stop()`; each finishes the operation it is in before stopping. `timeout` bounds each request;
    `remind_every`, if given, how often each worker creates a task with a reminder."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[str], str],
        *,
        workers: int = 4,
        timeout: float = 15,
        remind_every: float | None = None,
    ) -> None:
        self.requests: list[Request] = []
        self.users = [f"load-{uuid.uuid4().hex[:10]}" for _ in range(workers)]
        self.replicas: dict[str, Replica] = {user: {} for user in self.users}
        self.reminders: list[Reminder] = []
        self.remind_every = remind_every
        self.acknowledged = 0
        self.in_doubt_committed = 0
        self.anomalies: list[str] = []  # answers that contradict the replica, or operations left unresolved
        self._base_url = base_url
        self._token = token
        self._timeout = timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(user,), daemon=True) for user in self.users]

    def __enter__(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(GIVE_UP_SECONDS + self._timeout)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def wait_until(self, condition: Callable[[list[Request]], bool], *, timeout: float, what: str) -> float:
        """Poll until `condition(requests so far)` holds; the monotonic time it did. AssertionError
        naming `what` (and the answers so far) after `timeout` seconds or when every worker has ended."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.snapshot()
            if condition(requests):
                return time.monotonic()
            ended = not any(thread.is_alive() for thread in self._threads)
            if ended or time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not within {timeout:.0f} s; answers so far {statuses(requests)}; "
                    f"answers contradicting a replica: {self.anomalies}"
                )
            time.sleep(0.05)

    def audit(self, stored: Mapping[str, Replica]) -> Audit:
        """The replicas against `stored` (each user's rows, as the database holds them)."""
        totals: Counter[str] = Counter()
        for user, replica in self.replicas.items():
            totals.update(differences(replica, stored.get(user, {})))
        return Audit(
            self.acknowledged, totals["lost"], totals["duplicates"], totals["phantom"], self.in_doubt_committed
        )

    def verdict(self, database: psycopg.Connection[Any]) -> tuple[str, list[str]]:
        """The audit's line against `database` (read as a superuser), and what failed: the audit,
        answers that contradicted a replica."""
        audit = self.audit(stored_tasks(database, self.users))
        failed = [] if audit.clean else [f"the database departs from what the clients were told: {audit.line()}"]
        return audit.line(), failed + [f"answer contradicting the replica: {anomaly}" for anomaly in self.anomalies]

    def _work(self, user: str) -> None:
        headers = {"Authorization": f"Bearer {self._token(user)}"}
        with httpx.Client(base_url=self._base_url, headers=headers, timeout=self._timeout) as client:
            worker = _Worker(self, client, user)
            while not self._stop.is_set():
                try:
                    worker.one()
                except _Unresolved as error:  # the replica is unknown from here: this user stops
                    self._anomaly(user, str(error))
                    return

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _acknowledged(self, *, confirmed_by_retry: bool) -> None:
        with self._lock:
            self.acknowledged += 1
            self.in_doubt_committed += confirmed_by_retry

    def _reminded(self, reminder: Reminder) -> None:
        with self._lock:
            self.reminders.append(reminder)

    def _anomaly(self, user: str, what: str) -> None:
        with self._lock:
            self.anomalies.append(f"{user}: {what}")


class _Unresolved(Exception):
    pass


class _Worker:
    """One user's operations, one at a time, and the replica of that user's tasks."""

    def __init__(self, load: MixedLoad, client: httpx.Client, user: str) -> None:
        self.load = load
        self.client = client
        self.user = user
        self.replica = load.replicas[user]
        self.etags: dict[int, str] = {}
        self.random = random.Random(user)
        self.writes = 0
        self.kept: set[int] = set()  # tasks with a reminder: read, never written
        self.next_reminder = time.monotonic()

    def one(self) -> None:
        if self.load.remind_every is not None and time.monotonic() >= self.next_reminder:
            self.next_reminder = time.monotonic() + self.load.remind_every
            self.create(remind_in=self.random.uniform(*REMIND_AHEAD))
            return
        operation = self.random.choices(list(OPERATIONS), weights=list(OPERATIONS.values()))[0]
        tasks = list(self.replica) if operation == "get" else [t for t in self.replica if t not in self.kept]
        if not tasks and operation not in ("list", "create"):
            operation = "create"
        if operation == "list":
            self.list()
        elif operation == "get":
            self.check(self.random.choice(tasks), "get")
        elif operation == "create":
            self.create()
        elif operation == "delete":
            self.delete(self.random.choice(tasks))
        else:
            self.change(self.random.choice(tasks), operation)

    def send(self, operation: str, method: str, path: str, **options: Any) -> tuple[httpx.Response, bool]:
        """The first answer that is not a 5xx or a 429, sending `method path` again until it comes,
        and whether an earlier attempt was in doubt (5xx or no answer)."""
        doubt = False
        give_up = time.monotonic() + GIVE_UP_SECONDS
        while True:
            started = time.monotonic()
            response: httpx.Response | None = None
            try:
                response = self.client.request(method, path, **options)
            except httpx.TransportError as error:
                detail: str | None = type(error).__name__
            else:
                detail = _detail(response) if response.is_error else None
            status = None if response is None else response.status_code
            retry_after = None if response is None else response.headers.get("retry-after")
            self.load._record(
                Request(operation, self.user, started, time.monotonic(), status, retry_after, detail, doubt)
            )
            if response is not None and status is not None and status != 429 and status < 500:
                return response, doubt
            if time.monotonic() > give_up:
                raise _Unresolved(f"{operation} {path}: no final answer within {GIVE_UP_SECONDS} s (last: {status})")
            doubt = doubt or status != 429
            time.sleep(_pause(retry_after))

    def list(self) -> None:
        response, _ = self.send("list", "GET", f"/api/tasks?limit={LIST_LIMIT}")
        if response.status_code != 200:
            self.load._anomaly(self.user, f"list answered {response.status_code}")
            return
        seen = [(task["id"], _task(task)) for task in response.json()]
        expected = sorted(self.replica.items(), key=lambda item: -item[0])[:LIST_LIMIT]
        if seen != expected:
            self.load._anomaly(self.user, f"a list of {len(seen)} differs from the replica's newest {len(expected)}")

    def check(self, task_id: int, operation: str) -> Task | None:
        """The task as a GET answers it, compared with the replica when `operation` is a read."""
        response, _ = self.send(operation, "GET", f"/api/tasks/{task_id}")
        if response.status_code != 200:
            self.load._anomaly(self.user, f"GET of task {task_id} answered {response.status_code}")
            return None
        task = _task(response.json())
        self.etags[task_id] = response.headers["etag"]
        if operation == "get" and task != self.replica[task_id]:
            self.load._anomaly(self.user, f"task {task_id} read as {task}, acknowledged as {self.replica[task_id]}")
        return task

    def create(self, remind_in: float | None = None) -> None:
        tag = uuid.uuid4().hex
        body = {"title": f"task {tag[:12]}", "description": tag}
        remind_at = None
        if remind_in is not None:
            remind_at = (datetime.now(UTC) + timedelta(seconds=remind_in)).replace(microsecond=0)
            body["remind_at"] = remind_at.isoformat()
        response, doubt = self.send("create", "POST", "/api/tasks", json=body, headers={"Idempotency-Key": tag})
        if response.status_code != 201:
            self.load._anomaly(self.user, f"create answered {response.status_code}: {_detail(response)}")
            return
        created = response.json()
        replayed = response.headers.get("idempotent-replayed") == "true"
        if replayed and not doubt:
            self.load._anomaly(self.user, f"create {tag} replayed though no earlier attempt was sent")
        self.replica[created["id"]] = Task(tag, body["title"], False)
        self.etags[created["id"]] = response.headers["etag"]
        if _task(created) != self.replica[created["id"]]:
            self.load._anomaly(self.user, f"create answered {created}")
        if remind_at is not None:
            self.kept.add(created["id"])
            self.load._reminded(Reminder(self.user, created["id"], remind_at))
        self.load._acknowledged(confirmed_by_retry=replayed)

    def change(self, task_id: int, operation: str) -> None:
        """Set completion (the opposite of the replica's) or a new title, on the replica's ETag."""
        before = self.replica[task_id]
        self.writes += 1
        if operation == "complete":
            path, after = f"/api/tasks/{task_id}/complete", replace(before, completed=not before.completed)
            body: dict[str, Any] = {"completed": after.completed}
        else:
            path, after = f"/api/tasks/{task_id}", replace(before, title=f"renamed {before.tag[:12]} {self.writes}")
            body = {"title": after.title}
        response, doubt = self.send(operation, "PATCH", path, json=body, headers={"If-Match": self.etags[task_id]})
        if response.status_code == 200 and _task(response.json()) == after:
            self.replica[task_id] = after
            self.etags[task_id] = response.headers["etag"]
            self.load._acknowledged(confirmed_by_retry=False)
            return
        now = self.check(task_id, "confirm")
        if response.status_code == 412 and doubt and now == after:
            self.replica[task_id] = after
            self.load._acknowledged(confirmed_by_retry=True)
            return
        self.load._anomaly(self.user, f"{operation} of {task_id} answered {response.status_code}; the task is {now}")
        if now is not None:
            self.replica[task_id] = now

    def delete(self, task_id: int) -> None:
        headers = {"If-Match": self.etags[task_id]}
        response, doubt = self.send("delete", "DELETE", f"/api/tasks/{task_id}", headers=headers)
        confirmed = response.status_code == 404 and doubt
        if response.status_code == 204 or confirmed:
            del self.replica[task_id]
            self.load._acknowledged(confirmed_by_retry=confirmed)
        else:
            self.load._anomaly(self.user, f"delete of {task_id} answered {response.status_code}")


def differences(replica: Replica, stored: Replica) -> Counter[str]:
    """How `stored` (one user's rows) departs from `replica` (what that user was told): tasks
    lost (missing, or not as acknowledged), duplicates (extra rows of one create) and phantoms
    (rows of creates the replica does not hold: never acknowledged, or acknowledged deleted)."""
    rows_of: defaultdict[str, list[int]] = defaultdict(list)
    for task_id, task in stored.items():
        rows_of[task.tag].append(task_id)
    held = {task.tag: task_id for task_id, task in replica.items()}
    found: Counter[str] = Counter()
    for tag in held.keys() | rows_of.keys():
        found["duplicates"] += max(0, len(rows_of.get(tag, ())) - 1)
        if tag in held:
            found["lost"] += stored.get(held[tag]) != replica[held[tag]]
        elif rows_of.get(tag):
            found["phantom"] += 1
    return found


def stored_tasks(connection: psycopg.Connection[Any], users: Iterable[str]) -> dict[str, Replica]:
    """Each user's rows as the database holds them; `connection` must not be bound by row-level
    security (a superuser's)."""
    query = "SELECT user_id, id, description, title, completed FROM tasks WHERE user_id = ANY(%s)"
    stored: dict[str, Replica] = defaultdict(dict)
    for user, task_id, description, title, completed in connection.execute(query, [list(users)]):
        stored[user][task_id] = Task(description, title, completed)
    return stored


def _task(answer: Mapping[str, Any]) -> Task:
    return Task(str(answer["description"]), str(answer["title"]), bool(answer["completed"]))


def _pause(retry_after: str | None) -> float:
    try:
        return min(float(retry_after), RETRY_AFTER_CAP) if retry_after else NO_ANSWER_PAUSE
    except ValueError:
        return NO_ANSWER_PAUSE


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:80]


def unexpected(requests: Iterable[Request]) -> dict[str, int]:
    """How many answers of each status and detail a careful client should never get."""
    return dict(Counter(f"{r.operation} {r.status}: {r.detail}" for r in requests if not r.expected))


def failures(requests: Iterable[Request]) -> dict[str, int]:
    """How many requests of each status and detail were not answered 2xx."""
    return dict(Counter(f"{r.status}: {r.detail}" for r in requests if r.status is None or not 200 <= r.status < 300))


def statuses(requests: Iterable[Request]) -> dict[str, int]:
    """How many answers of each status ('none': no answer)."""
    return dict(Counter("none" if r.status is None else str(r.status) for r in requests))
