"""Clients that follow each of the load's users through the topology's faults (tests/support/topology.py),
and the audit of what they hold against the database.

For every user of the load (tests/support/load.py) two clients start from a snapshot of the change feed:

- a **live stream** (`GET /api/tasks/events`) held straight on one API host (the users' on
  api1, api2, api3, api1 in turn), not through the balancer, so that the other hosts' faults do
  not touch it. As a browser tab's `subscribe()` does, it resumes with `Last-Event-ID`: on the
  next host when its own host fails (the connection reset, or nothing heard for `silence`
  seconds: no event and no heartbeat), on the same host after `event: expired` with a fresh
  token (its tokens live STREAM_TOKEN_SECONDS);
- a **feed follower** polling `GET /api/tasks/changes?since=` through the balancer.

The first user also has a second stream, through the balancer (a second tab, reaching the
service as browsers do), which resumes through the balancer.

Each builds a replica from what it was sent alone. Once the load has stopped, every reminder it
set has fired and every client has caught up with its user's head, the audit reads the
database as the superuser:

- `missed`: a task the database holds that the client lacks or holds in another state, a task
  the client holds that the database does not (a deletion missed), a reminder that fired and
  never reached the client;
- `duplicated`: an event whose position (its id is a feed token: the test decodes it with the
  service's key) is not past the previous one's, an upsert that changes nothing the client
  holds, a reminder received a second time, a task twice in one page of the feed;
- `reminders`: each reminder the load set (on a task nothing changes afterwards) must be in the
  feed's log exactly once (`fired_once`, `twice`, `never`), never before its time, and reach
  every stream of its user exactly once (`delivered_once`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg

from handlers import cursors
from handlers.signing import Keyring
from tests.support.load import MixedLoad, Reminder
from tests.support.sync import Event, parse_events

STREAM_TOKEN_SECONDS = 20  # short, so that every stream ends `expired` several times a run
FEED_POLL_SECONDS = 0.5
FEED_TIMEOUT = 30.0  # the balancer answers within its own bound (tests/support/topology.py)
PAGE = 500
CONNECT_SECONDS = 2.0
PAUSE_SECONDS = 0.5  # before connecting again after a failure that gave no Retry-After
SETTLE_SECONDS = 60  # after the load: for its last reminders to fire and every client to catch up

State = tuple[Any, ...]  # what a client can see of a task, comparable with the database's row
Key = tuple[int, datetime]  # a reminder: its task and its time


def _instant(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def task_state(task: Mapping[str, Any]) -> State:
    return (
        task["title"],
        task["description"],
        task["completed"],
        task["priority"],
        tuple(task["tags"]),
        *(_instant(task[name]) for name in ("due_date", "remind_at", "updated_at")),
    )


def reminder_key(task: Mapping[str, Any]) -> Key:
    remind_at = _instant(task["remind_at"])
    assert remind_at is not None, task
    return task["id"], remind_at


@dataclass
class Holding:
    """What one client of one user's feed holds, built only from what it was sent, and what it
    noticed on the way."""

    user: str
    keys: Keyring
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    reminders: Counter[Key] = field(default_factory=Counter)
    token: str | None = None  # where it resumes from
    position: tuple[int, int] = (0, 0)  # (epoch, number) that `token` names
    changes: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    def apply(self, entry: Mapping[str, Any]) -> None:
        self.changes += 1
        if entry["type"] == "reminder":
            key = reminder_key(entry["task"])
            self.duplicated += self.reminders[key] > 0
            self.reminders[key] += 1
        elif entry["type"] == "upsert":
            task = entry["task"]
            self.duplicated += self.tasks.get(task["id"]) == task
            self.tasks[task["id"]] = task
        else:
            self.tasks.pop(entry["id"], None)

    def advance(self, token: str, *, strictly: bool) -> None:
        """Resume from `token` from now on; a position not past the last one (`strictly`: each
        event's) is a change sent again or out of order."""
        try:
            epoch, number = cursors.decode(self.keys, token, user_id=self.user, query={})[:2]
        except Exception as error:  # the service's BadRequest: not a token of this user's
            self.problems.append(f"{self.user}: an id that is not the user's feed token ({error})")
            return
        last_epoch, last = self.position
        if last_epoch and epoch != last_epoch:
            self.problems.append(f"{self.user}: the feed started again (epoch {last_epoch} to {epoch})")
        elif number < last or (strictly and number == last):
            self.duplicated += 1
        self.token, self.position = token, (epoch, number)

    def restart(self, why: str) -> None:
        """Start again from a snapshot, as a client told 410 does; it should never have to."""
        self.problems.append(f"{self.user}: {why}; started again from a snapshot")
        self.tasks.clear()
        self.token, self.position = None, (0, 0)

    def missed(self, stored: Mapping[int, State], due: Iterable[Key]) -> int:
        held = {task_id: task_state(task) for task_id, task in self.tasks.items()}
        stale = sum(held.get(task_id) != state for task_id, state in stored.items())
        return stale + len(held.keys() - stored.keys()) + sum(1 for key in due if not self.reminders[key])


def read_feed(client: httpx.Client, base: str, token: str, holding: Holding) -> bool:
    """Pages of `holding.user`'s feed from `base` until `more` is false, applied to `holding`;
    False when the service did not answer (an outage: try again later)."""
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if holding.token is not None:
            params["since"] = holding.token
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = client.get(f"{base}/api/tasks/changes", params=params, headers=headers)
        except httpx.TransportError:
            return False
        if response.status_code in (401, 429, 502, 503, 504):  # 401: the token expired on the way
            return False
        if response.status_code != 200:
            holding.restart(f"the feed answered {response.status_code}: {response.text[:200]}")
            return False
        page = response.json()
        ids = [entry["task"]["id"] if "task" in entry else entry["id"] for entry in page["changes"]]
        ids = [task_id for task_id, entry in zip(ids, page["changes"], strict=True) if entry["type"] != "reminder"]
        holding.duplicated += len(ids) - len(set(ids))
        for entry in page["changes"]:
            holding.apply(entry)
        holding.advance(page["next"], strictly=False)
        if not page["more"]:
            return True


@dataclass(frozen=True, slots=True)
class Fired:
    """A reminder in the feed's log: its task and time, its user, when it fired, and when it was
    first due: its time, or the task's creation if that came later (a create retried through an
    outage may commit after the time it set)."""

    key: Key
    user: str
    at: datetime
    due: datetime


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.monotonic()
    kind: str
    lag: float | None  # seconds from the change's updated_at (an upsert) or the reminder's time


@dataclass(frozen=True, slots=True)
class Connection:
    host: str
    ended: float  # time.monotonic()
    why: str  # expired, lost (reset, or nothing heard), refused (503 …), ended (by the service)


class Stream:
    """`holding.user`'s live stream, on `hosts[0]` until that host fails, then the next."""

    def __init__(self, followers: Followers, holding: Holding, hosts: list[str]) -> None:
        self.followers = followers
        self.holding = holding
        self.hosts = hosts
        self.host = 0
        self.arrivals: list[Arrival] = []
        self.reached: dict[Key, float] = {}  # each reminder's first arrival, wall-clock
        self.connections: list[Connection] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            self._follow()
        except Exception as error:  # noted, so that the audit says why this client stopped
            self.holding.problems.append(f"{self.holding.user}: the stream's client failed: {error!r}")

    def _follow(self) -> None:
        followers = self.followers
        timeout = httpx.Timeout(followers.silence, connect=CONNECT_SECONDS)
        with httpx.Client(timeout=timeout) as client:
            while not followers.stopping.is_set():
                base = self.hosts[self.host]
                token = followers.token(self.holding.user)
                if self.holding.token is None and not read_feed(client, base, token, self.holding):
                    self._lost(base)
                    continue
                try:
                    why, pause = self.hold(client, base, token)
                except httpx.TransportError:
                    self._lost(base)
                    continue
                self.connections.append(Connection(base, time.monotonic(), why))
                followers.stopping.wait(pause)

    def _lost(self, base: str) -> None:
        """The host failed: resume on the next one."""
        self.connections.append(Connection(base, time.monotonic(), "lost"))
        self.host = (self.host + 1) % len(self.hosts)
        self.followers.stopping.wait(PAUSE_SECONDS)

    def hold(self, client: httpx.Client, base: str, token: str) -> tuple[str, float]:
        """Read the stream until it ends; why it ended and how long to wait before the next."""
        headers = {"Authorization": f"Bearer {token}"}
        if self.holding.token is not None:
            headers["Last-Event-ID"] = self.holding.token
        with client.stream("GET", f"{base}/api/tasks/events", headers=headers) as response:
            if response.status_code != 200:
                response.read()
                if response.status_code in (401, 429, 503):
                    return "refused", min(float(response.headers.get("retry-after", PAUSE_SECONDS)), 5.0)
                self.holding.restart(f"the stream answered {response.status_code}: {response.text[:200]}")
                return "refused", 0.0
            for event in parse_events(response.iter_lines()):
                if self.followers.stopping.is_set():
                    return "stopped", 0.0
                if event.type == "expired":
                    return "expired", 0.0
                if event.type != ":":
                    self.receive(event)
        return "ended", 0.0

    def receive(self, event: Event) -> None:
        assert event.id is not None, event
        self.holding.advance(event.id, strictly=True)
        self.holding.apply(event.data)
        wall = event.at + self.followers.clock
        since = None
        if event.type == "upsert":
            since = _instant(event.data["task"]["updated_at"])
        elif event.type == "reminder":
            since = _instant(event.data["task"]["remind_at"])
            self.reached.setdefault(reminder_key(event.data["task"]), wall)
        self.arrivals.append(Arrival(event.at, event.type, None if since is None else wall - since.timestamp()))


class Followers:
    """The streams and feed followers of `load`'s users, and their audit (an Observer of
    tests/support/topology.py). `hosts` are the API hosts' base URLs, `balancer` the balancer's; `token`
    mints a short-lived token for a user; `keys` verify change tokens; `connect` opens a
    superuser's connection to the primary; `silence` is how long a stream may hear nothing
    before its client gives its host up."""

    def __init__(
        self,
        load: MixedLoad,
        *,
        hosts: list[str],
        balancer: str,
        token: Callable[[str], str],
        keys: Keyring,
        connect: Callable[[], psycopg.Connection[Any]],
        silence: float,
    ) -> None:
        self.load = load
        self.balancer = balancer
        self.token = token
        self.connect = connect
        self.silence = silence
        self.clock = time.time() - time.monotonic()  # a monotonic instant + this = its wall-clock time
        self.stopping = threading.Event()
        self.streams = [
            Stream(self, Holding(user, keys), [*hosts[n % len(hosts) :], *hosts[: n % len(hosts)]])
            for n, user in enumerate(load.users)
        ]
        self.streams.append(Stream(self, Holding(load.users[0], keys), [balancer]))  # a second tab
        self.feeds = [Holding(user, keys) for user in load.users]
        self.feed_polls = 0
        self._feed_thread = threading.Thread(target=self._poll_feeds, daemon=True)
        self.fired: list[Fired] = []

    def __enter__(self) -> Followers:
        for stream in self.streams:
            stream.thread.start()
        self._feed_thread.start()
        return self

    def __exit__(self, *failure: object) -> None:
        if failure[0] is None:
            self._settle()
        self.stopping.set()
        for thread in (self._feed_thread, *(stream.thread for stream in self.streams)):
            thread.join(self.silence + 10)

    def _poll_feeds(self) -> None:
        with httpx.Client(timeout=FEED_TIMEOUT) as client:
            while not self.stopping.is_set():
                for holding in self.feeds:
                    try:
                        read_feed(client, self.balancer, self.token(holding.user), holding)
                    except Exception as error:  # noted, so that the audit says why this client stopped
                        holding.problems.append(f"{holding.user}: the feed's client failed: {error!r}")
                        return
                    self.feed_polls += 1
                self.stopping.wait(FEED_POLL_SECONDS)

    def _due(self) -> dict[Key, Reminder]:
        return {(r.task_id, r.remind_at): r for r in self.load.reminders}

    def _settle(self) -> None:
        """Wait for the load's last reminders to fire, then for every client to reach its user's
        head (each until SETTLE_SECONDS past the last reminder's time)."""
        due = self._due()
        last = max((key[1].timestamp() for key in due), default=time.time())
        deadline = time.monotonic() + max(0.0, last - time.time()) + SETTLE_SECONDS
        with self.connect() as database:
            while time.monotonic() < deadline and due.keys() - {f.key for f in self._read_fired(database)}:
                time.sleep(0.2)
            heads = self._heads(database)
        holdings = [*self.feeds, *(stream.holding for stream in self.streams)]
        while time.monotonic() < deadline and any(h.position[1] < heads.get(h.user, 0) for h in holdings):
            time.sleep(0.2)

    def _read_fired(self, database: psycopg.Connection[Any]) -> list[Fired]:
        rows = database.execute(
            "SELECT task_id, (task->>'remind_at')::timestamptz, user_id, at, (task->>'created_at')::timestamptz "
            "FROM feed_log WHERE kind = 'reminder' AND user_id = ANY(%s)",
            [self.load.users],
        ).fetchall()
        return [Fired((task, due), user, at, max(due, created)) for task, due, user, at, created in rows]

    def _heads(self, database: psycopg.Connection[Any]) -> dict[str, int]:
        rows = database.execute("SELECT user_id, seq FROM feed_heads WHERE user_id = ANY(%s)", [self.load.users])
        return dict(rows.fetchall())

    def verdict(self, database: psycopg.Connection[Any]) -> tuple[str, list[str]]:
        """Three lines (stream, feed, reminders) against `database`, read as the superuser, and
        what failed."""
        stored: dict[str, dict[int, State]] = defaultdict(dict)
        for user, task_id, *state in database.execute(
            "SELECT user_id, id, title, description, completed, priority::text, tags, due_date, remind_at, updated_at "
            "FROM tasks WHERE user_id = ANY(%s)",
            [self.load.users],
        ):
            state[4] = tuple(state[4])
            stored[user][task_id] = tuple(state)
        self.fired = self._read_fired(database)
        fired = Counter(f.key for f in self.fired)
        heads = self._heads(database)
        due = self._due()
        due_of: dict[str, list[Key]] = defaultdict(list)  # those that fired: each client must have it
        for key, reminder in due.items():
            if fired[key]:
                due_of[reminder.user].append(key)
        failed: list[str] = []

        def audit(name: str, holdings: list[Holding]) -> tuple[int, int]:
            missed = duplicated = 0
            for holding in holdings:
                missed += holding.missed(stored[holding.user], due_of[holding.user])
                duplicated += holding.duplicated
                failed.extend(f"{name}: {problem}" for problem in holding.problems)
                if holding.position[1] < heads.get(holding.user, 0):
                    failed.append(
                        f"{name} of {holding.user} stuck at change {holding.position[1]} of "
                        f"{heads[holding.user]} for {SETTLE_SECONDS} s after the load"
                    )
            return missed, duplicated

        streams = [stream.holding for stream in self.streams]
        stream_missed, stream_duplicated = audit("stream", streams)
        feed_missed, feed_duplicated = audit("feed", self.feeds)
        ends = Counter(c.why for stream in self.streams for c in stream.connections)
        lines = [
            f"stream: events={sum(h.changes for h in streams)} missed={stream_missed} duplicated={stream_duplicated} "
            f"streams={len(streams)} resumed_after_loss={ends['lost']} resumed_after_expired={ends['expired']}",
            f"feed: polls={self.feed_polls} changes={sum(h.changes for h in self.feeds)} missed={feed_missed} "
            f"duplicated={feed_duplicated}",
        ]
        delivered: dict[str, list[Counter[Key]]] = defaultdict(list)
        for stream in self.streams:
            delivered[stream.holding.user].append(stream.holding.reminders)
        once = sum(fired[key] == 1 for key in due)
        twice = sum(fired[key] > 1 for key in due)
        never = sum(fired[key] == 0 for key in due)
        delivered_once = sum(all(got[key] == 1 for got in delivered[r.user]) for key, r in due.items())
        lines.append(
            f"reminders: due={len(due)} fired_once={once} twice={twice} never={never} delivered_once={delivered_once}"
        )
        if stream_missed or stream_duplicated or feed_missed or feed_duplicated:
            failed.append(f"a client departs from the database: {' / '.join(lines[:2])}")
        if twice or never or delivered_once != len(due):
            failed.append(f"a reminder did not fire, or reach its stream, exactly once: {lines[2]}")
        if unplanned := fired.keys() - due.keys():
            failed.append(f"reminders fired that the load never set: {sorted(unplanned)[:10]}")
        if early := [f.key for f in self.fired if f.at < f.key[1]]:
            failed.append(f"reminders fired before their time: {early[:10]}")
        return "\n".join(lines), failed

    def facts(self, started: float, ended: float) -> dict[str, str]:
        """What the clients saw during one step (monotonic [started, ended)): events arrived and
        their latency from the change's `updated_at` (p50/p99/max), reminders falling due and how
        long after they were first due they fired and reached the streams (max), streams resumed."""
        arrivals = [a for stream in self.streams for a in stream.arrivals if started <= a.at < ended]
        lags = sorted(a.lag for a in arrivals if a.kind == "upsert" and a.lag is not None)
        facts = {"stream_events": str(len(arrivals))}
        if lags:
            p99 = statistics.quantiles(lags, n=100, method="inclusive")[98] if len(lags) > 1 else lags[0]
            facts["event_latency"] = f"{statistics.median(lags):.2f}/{p99:.2f}/{lags[-1]:.2f}s"
        falling = {f.key: f for f in self.fired if started <= f.due.timestamp() - self.clock < ended}
        facts["reminders_due"] = str(len(falling))
        if falling:
            fired = max((f.at - f.due).total_seconds() for f in falling.values())
            facts["reminder_fired_max"] = f"{fired:.1f}s"
            reached = [
                stream.reached[key] - f.due.timestamp()
                for stream in self.streams
                for key, f in falling.items()
                if key in stream.reached
            ]
            if reached:
                facts["reminder_reached_max"] = f"{max(reached):.1f}s"
        ends = Counter(c.why for stream in self.streams for c in stream.connections if started <= c.ended < ended)
        if ends:
            facts["streams_ended"] = ",".join(f"{why}:{n}" for why, n in sorted(ends.items()))
        return facts
