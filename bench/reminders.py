"""The reminder flood of issue 21: 50 000 reminders of 5 000 users due at once, fired by
`todo-api serve --workers 2` while 200 of those users hold live streams (spread over both
workers) and the bench's mix runs at a fixed rate (open loop, bench/openloop.py).

The database PREFIX + "reminders" gets the workload's users and tasks and the flood's users.
With the server running and the streams open, the mix runs once without a flood (the baseline).
Then the flood's tasks are inserted in one statement, as the owner, through the migrations' own
triggers (which queue each reminder), due `--lead` seconds later at `--instants` instants
`--step` apart; the same mix runs again from a second before the first instant. Afterwards the
database is checked (one reminder in the feed per task, none missed, none still queued) and
what fired is read back: when (`feed_log.at`), in which transaction (`xmin`: one scheduler
round), in what order.

`--against REVISION` floods that revision's server too (its tree from `git archive`, run with
this checkout's .venv), alternating with this checkout's for `--rounds`, and prints the medians
side by side: the before/after of a server change, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import psycopg
import uvloop

from bench import openloop
from bench.harness import (
    APP_PYTHON,
    CLOCK_TICKS,
    PREFIX,
    ROOT,
    TARGETS,
    TASKS_PER_USER,
    TODO_API,
    USERS,
    BackendCPU,
    Server,
    cpu_seconds,
    descendants,
    log,
    median,
    recreate_database,
    save,
    seed,
    task_ids,
    token,
)

DATABASE = PREFIX + "reminders"
FLOOD = "flood"  # the flood's user ids start so; the workload's are u000…
URL = TARGETS["ours"].url(DATABASE)
Sample = tuple[float, float, bool]  # a request of the mix: when it was due (time.time()), its latency, writes

FLOOD_USERS = """
INSERT INTO users (id, email, name, task_count)
SELECT u, u || '@bench.example', 'Flood ' || u, %(per_user)s FROM unnest(%(users)s::text[]) AS u
"""
# Each user's tasks fall on consecutive instants, so every user (and every stream) has one due
# at each instant when per_user ≥ instants.
FLOOD_TASKS = """
INSERT INTO tasks (user_id, title, remind_at)
SELECT u.id, format('Reminder %%s of %%s', n, u.id),
       to_timestamp(%(first)s) + ((u.ord * %(per_user)s + n) %% %(instants)s) * %(step)s * interval '1 second'
FROM unnest(%(users)s::text[]) WITH ORDINALITY AS u(id, ord), generate_series(1, %(per_user)s) AS n
ORDER BY u.ord, n
"""
FIRED = f"""
SELECT log.user_id, log.task_id, log.late, log.xmin::text AS round,
       extract(epoch FROM log.at)::float8 AS at,
       extract(epoch FROM (log.task ->> 'remind_at')::timestamptz)::float8 AS due
FROM feed_log AS log WHERE log.kind = 'reminder' AND log.user_id LIKE '{FLOOD}%'
"""
QUEUED = f"SELECT count(*) FROM reminders WHERE user_id LIKE '{FLOOD}%'"
AUDIT = f"""
SELECT count(*) AS tasks,
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT FROM feed_log AS log WHERE log.user_id = t.user_id AND log.kind = 'reminder' AND log.task_id = t.id
       )) AS missed,
       count(*) FILTER (WHERE NOT t.reminded) AS unmarked,
       ({QUEUED}) AS queued
FROM tasks AS t WHERE t.user_id LIKE '{FLOOD}%'
"""
MONITOR = "bench-monitor"  # the application_name of this bench's own connections
# What each busy backend of the database is doing: waiting (for what) or not.
ACTIVITY = f"""
SELECT coalesce(wait_event_type || ' ' || wait_event, 'not waiting') AS doing, count(*)
FROM pg_stat_activity
WHERE datname = %s AND state = 'active' AND application_name <> '{MONITOR}'
GROUP BY 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--against", metavar="REVISION", help="flood that revision's server too, alternating with this checkout's"
    )
    parser.add_argument("--rounds", type=int, default=1, help="floods per build, builds alternating (default 1)")
    parser.add_argument("--users", type=int, default=5000, help="users whose reminders fall due (default 5000)")
    parser.add_argument("--per-user", type=int, default=10, help="reminders per user (default 10)")
    parser.add_argument("--instants", type=int, default=10, help="distinct due times (default 10)")
    parser.add_argument("--step", type=float, default=0.1, help="seconds between the due times (default 0.1)")
    parser.add_argument("--streams", type=int, default=200, help="flood users with a live stream open (default 200)")
    parser.add_argument("--rate", type=float, default=150, help="the mix's offered rate, requests/s (default 150)")
    parser.add_argument("--duration", type=float, default=20, help="seconds of the mix without a flood (default 20)")
    parser.add_argument("--window", type=float, default=60, help="seconds of the mix from the flood on (default 60)")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--lead", type=float, default=20, help="seconds from the insert to the first due time")
    parser.add_argument("--max-wait", type=float, default=600, help="seconds to wait for every reminder to fire")
    parser.add_argument("--workers", type=int, default=2)


# --- the client's side: live streams and the mix ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.time() when the event was read
    user: str
    task: int
    due: float
    late: bool


@dataclass
class Streams:
    """One live stream per user, read as the bytes arrive; every `event: reminder` is noted."""

    server: Server
    arrivals: list[Arrival] = field(default_factory=list)
    workers: Counter[int] = field(default_factory=Counter)  # streams held by each worker's pid
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self, users: list[str], *, attempts: int = 8) -> None:
        """A stream for each of `users`, as many on each worker as can be: one that lands on a
        worker holding its share already is closed and opened again (the workers share one
        listening socket, and the kernel hands a burst of connections to whichever accepts)."""
        share = -(-len(users) // self.server.workers)
        for user in users:
            for attempt in range(attempts):
                connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                reader = asyncio.create_task(self._read(user, connected))
                try:
                    local_port = await asyncio.wait_for(asyncio.shield(connected), 30)
                except TimeoutError:
                    reader.cancel()
                    raise SystemExit(f"the live stream of {user} did not connect within 30s") from None
                pid = _owner(self.server, local_port)
                if self.workers[pid] < share or attempt == attempts - 1:
                    self.workers[pid] += 1
                    self._readers.append(reader)
                    break
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    def close(self) -> None:
        for reader in self._readers:
            reader.cancel()

    async def _read(self, user: str, connected: asyncio.Future[int]) -> None:
        """Read `user`'s stream; `connected` gets the connection's local port once it has begun."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        writer.write(
            f"GET /api/tasks/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token(user)}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                status = head.split(b"\r\n", 1)[0].decode()
                connected.set_exception(RuntimeError(f"the live stream of {user}: {status}"))
                return
            chunked = b"transfer-encoding: chunked" in head.lower()
            buffer = b""
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        return
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                buffer += data
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    if block.startswith(b": connected") and not connected.done():
                        connected.set_result(writer.get_extra_info("sockname")[1])
                    self._event(user, block)
        finally:
            writer.close()

    def _event(self, user: str, block: bytes) -> None:
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and not line.startswith(b":"))
        if lines.get(b"event") != b"reminder":
            return
        data = orjson.loads(lines[b"data"])
        due = datetime.fromisoformat(data["task"]["remind_at"]).timestamp()
        self.arrivals.append(Arrival(time.time(), user, data["task"]["id"], due, data["late"]))


def _owner(server: Server, client_port: int) -> int:
    """The pid of the server's process holding the connection from `client_port` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            if local == server.port and remote == client_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in server.pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):  # closed meanwhile
                if os.readlink(fd) in inodes:
                    return pid
    raise RuntimeError(f"no process of the server holds the connection from port {client_port}")


def offered_load(
    port: int, users: dict[str, tuple[str, list[int]]], rate: float, duration: float, start_at: float
) -> tuple[openloop.OpenLoad, list[Sample]]:
    """The mix at `rate` for `duration` s from `start_at` (time.time()), in a process of its own
    so that the streams' reader and the load do not delay each other."""
    time.sleep(max(0.0, start_at - time.time()))
    samples: list[Sample] = []
    return openloop.run(port, users, rate=rate, duration=duration, samples=samples), samples


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """The service to flood: this checkout's, or another revision's tree run with this checkout's
    .venv (for a before/after of a server change: the same dependencies, the code of `tree`)."""

    label: str
    tree: Path | None = None

    def command(self, *args: str) -> list[str]:
        if self.tree is None:
            return [TODO_API, *args]
        # -P: not this checkout's packages from the working directory, but those on PYTHONPATH.
        return [APP_PYTHON, "-P", "-c", "import sys; from todo_api.cli import main; sys.exit(main())", *args]

    def env(self) -> dict[str, str]:
        return {} if self.tree is None else {"PYTHONPATH": str(self.tree)}


def extract(revision: str, into: Path) -> Build:
    """`revision`'s tree (git archive) in `into`."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, capture_output=True, text=True)
    return Build(f"{revision} ({commit.stdout.strip()})", into)


def prepare(build: Build, flood_users: list[str], per_user: int) -> dict[str, tuple[str, list[int]]]:
    """A fresh database with the workload's users and tasks and the flood's users (no tasks yet);
    the workload's users with their tokens and task ids."""
    started = time.monotonic()
    target = TARGETS["ours"]
    recreate_database(DATABASE)
    env = {**target.env(DATABASE), **build.env()}
    subprocess.run(build.command("migrate"), env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    seed(target, [f"u{n:03d}" for n in range(USERS)], TASKS_PER_USER, database=DATABASE)
    with psycopg.connect(URL, autocommit=True) as connection:
        connection.execute(FLOOD_USERS, {"users": flood_users, "per_user": per_user})
        connection.execute("VACUUM ANALYZE users")
    log(f"  {DATABASE}: {USERS} users × {TASKS_PER_USER} tasks for the mix, {len(flood_users)} flood users, "
        f"in {time.monotonic() - started:.1f}s")  # fmt: skip
    return {user: (token(user), ids) for user, ids in task_ids(target, DATABASE).items()}


def insert_flood(flood_users: list[str], args: argparse.Namespace, first: float) -> float:
    started = time.monotonic()
    with psycopg.connect(URL, autocommit=True) as connection:
        params = {"users": flood_users, "per_user": args.per_user, "instants": args.instants, "step": args.step}
        connection.execute(FLOOD_TASKS, {**params, "first": first})
        connection.execute("ANALYZE tasks, reminders")
    return time.monotonic() - started


class Fired(NamedTuple):
    """A reminder in the feed; `round` is the scheduler's transaction that fired it."""

    user: str
    task: int
    late: bool
    round: str
    at: float
    due: float


class Audit(NamedTuple):
    tasks: int
    missed: int  # tasks with no reminder in the feed
    unmarked: int  # tasks not marked reminded
    queued: int  # reminders still waiting


class Activity:
    """The database's busy backends, by what they wait for, four times a second."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, Counter[str]]] = []

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True, application_name=MONITOR) as connection:
            while True:
                rows = await (await connection.execute(ACTIVITY, [DATABASE])).fetchall()
                self.samples.append((time.time(), Counter(dict(rows))))
                await asyncio.sleep(0.25)

    def mean(self, start: float, end: float) -> dict[str, float]:
        """Backends doing each thing on average between `start` and `end` (time.time())."""
        chosen = [doing for at, doing in self.samples if start <= at <= end]
        total: Counter[str] = sum(chosen, Counter())
        return {doing: count / len(chosen) for doing, count in total.most_common()} if chosen else {}


class Machine:
    """The CPU the rest of the machine (other users' jobs) takes during a phase: all busy CPU
    (/proc/stat) less the server's, its database backends' and this bench's own processes'."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy = self._busy()
        self.ours = self._ours()
        self.backends = BackendCPU(DATABASE)
        self.backends.start()

    def others(self) -> float:
        """Cores' worth of CPU the others used since the start (blocks up to half a second)."""
        backends = self.backends.seconds()
        spent = self._busy() - self.busy - (self._ours() - self.ours) - backends
        return spent / (time.monotonic() - self.started)

    @staticmethod
    def _ours() -> float:
        return sum(cpu_seconds(descendants(os.getpid())).values())  # the server's processes included

    @staticmethod
    def _busy() -> float:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Flood:
    per_worker: list[int]
    baseline: openloop.OpenLoad
    baseline_samples: list[Sample]
    during: openloop.OpenLoad
    samples: list[Sample]
    arrivals: list[Arrival]
    first: float
    insert_seconds: float
    activity: Activity
    others_cores: tuple[float, float]  # the rest of the machine's CPU: without a flood, from it on
    all_fired: bool


async def run_flood(
    server: Server, args: argparse.Namespace, workload: dict[str, Any], flood_users: list[str]
) -> Flood:
    watched = flood_users[:: max(1, len(flood_users) // args.streams)][: args.streams]
    streams = Streams(server)
    await streams.open(watched)
    per_worker = sorted(streams.workers.values(), reverse=True)
    log(f"  {len(watched)} live streams open, per worker: {' + '.join(map(str, per_worker))}")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:

        def mix(duration: float, start_at: float = 0.0) -> asyncio.Future[Any]:
            return loop.run_in_executor(executor, offered_load, server.port, workload, args.rate, duration, start_at)

        await mix(args.warmup)
        log(f"  the mix at {args.rate:g} req/s without a flood, {args.duration:g}s")
        activity = Activity()
        sampler = asyncio.create_task(activity.run())
        machine = await asyncio.to_thread(Machine)
        baseline, baseline_samples = await mix(args.duration)
        quiet = await asyncio.to_thread(machine.others)

        first = time.time() + args.lead
        insert_seconds = await asyncio.to_thread(insert_flood, flood_users, args, first)
        expected = len(flood_users) * args.per_user
        log(f"  {expected} reminders inserted in {insert_seconds:.1f}s, the first due in {first - time.time():.1f}s")
        if time.time() > first - 1.5:
            raise SystemExit(f"the insert took {insert_seconds:.1f}s, past the first due time: raise --lead")
        during = mix(args.window, first - 1)
        machine = await asyncio.to_thread(Machine)
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True, application_name=MONITOR) as connection:
            deadline = first + args.max_wait
            while time.time() < deadline:
                queued = (await (await connection.execute(QUEUED)).fetchone() or (0,))[0]
                if queued == 0 and during.done():
                    break
                await asyncio.sleep(0.25)
            all_fired = queued == 0
        busy = await asyncio.to_thread(machine.others)
        sampler.cancel()
        expected_arrivals = len(watched) * args.per_user
        for _ in range(100):  # what fired last may still be on its way to the streams
            if len(streams.arrivals) >= expected_arrivals:
                break
            await asyncio.sleep(0.1)
        load, samples = await during
    streams.close()
    return Flood(
        per_worker, baseline, baseline_samples, load, samples, list(streams.arrivals), first, insert_seconds,
        activity, (quiet, busy), all_fired,
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    log(f"reminder flood: {args.users * args.per_user} reminders of {args.users} users, {args.rounds} round(s)")
    with tempfile.TemporaryDirectory(prefix="bench-reminders-") as folder:
        builds = (
            [extract(args.against, Path(folder)), Build("this checkout")] if args.against else [Build("this checkout")]
        )
        reports: dict[str, list[dict[str, Any]]] = {build.label: [] for build in builds}
        for number in range(args.rounds):
            # Alternate the order, so that a drift in the machine's load hits both builds alike.
            for build in builds if number % 2 == 0 else builds[::-1]:
                print(f"\n== round {number + 1}: {build.label} ==", flush=True)
                reports[build.label].append(flood_once(build, args))
    if len(builds) > 1 or args.rounds > 1:
        _summary(reports)
    path = save("reminders", {"args": vars(args), "reports": reports})
    log(f"saved {path.relative_to(path.parents[2])}")
    failed = [f"{label}: {problem}" for label, runs in reports.items() for run in runs for problem in run["failed"]]
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    return 0


def flood_once(build: Build, args: argparse.Namespace) -> dict[str, Any]:
    flood_users = [f"{FLOOD}{n:05d}" for n in range(args.users)]
    workload = prepare(build, flood_users, args.per_user)
    command = build.command("serve", "--port", "{port}", "--workers", str(args.workers))
    with Server(TARGETS["ours"], workers=args.workers, database=DATABASE, command=command, env=build.env()) as server:
        flood = uvloop.run(run_flood(server, args, workload, flood_users))
    with psycopg.connect(URL) as connection:
        fired = [Fired(*row) for row in connection.execute(FIRED)]
        audit = Audit(*(connection.execute(AUDIT).fetchone() or ()))
    return _report(args, flood, fired, audit)


# --- the report -----------------------------------------------------------------------------


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of `values` (seconds), in milliseconds."""
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        ordered[-1] * 1000,
    )


def _lags(label: str, values: list[float]) -> str:
    p50, p99, top = _percentiles(values)
    return f"{label:52s} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  max {top:8.1f} ms  ({len(values)})"


def _overtaken(fired: list[Fired]) -> tuple[int, float]:
    """How many fired after a reminder due later had already fired, and by how long at most (s)."""
    first_at: dict[float, float] = {}
    for row in fired:
        first_at[row.due] = min(row.at, first_at.get(row.due, row.at))
    later_first: dict[float, float] = {}  # due → the earliest firing of anything due after it
    earliest = float("inf")
    for due in sorted(first_at, reverse=True):
        later_first[due] = earliest
        earliest = min(earliest, first_at[due])
    delays = [row.at - later_first[row.due] for row in fired if row.at > later_first[row.due]]
    return len(delays), max(delays, default=0.0)


def _out_of_order_on_streams(arrivals: list[Arrival]) -> int:
    """Reminders that reached a stream after one of the same user's due later."""
    by_user: dict[str, list[Arrival]] = {}
    for arrival in arrivals:
        by_user.setdefault(arrival.user, []).append(arrival)
    return sum(after.due < before.due for got in by_user.values() for before, after in itertools.pairwise(got))


def _report(args: argparse.Namespace, flood: Flood, fired: list[Fired], audit: Audit) -> dict[str, Any]:
    """Print the figures of one flood; the same as a dict, with what failed."""
    expected = args.users * args.per_user
    failed = []
    twice = len(fired) - len({(row.user, row.task) for row in fired})
    late = sum(row.late for row in fired)
    rounds = sorted(Counter(row.round for row in fired).values())
    last_at = max((row.at for row in fired), default=flood.first)
    span = last_at - flood.first
    print(f"{expected} reminders of {args.users} users due at {args.instants} instants {args.step:g}s apart; "
          f"{args.workers} workers; {args.streams} live streams ({' + '.join(map(str, flood.per_worker))} "
          f"on the workers); the mix at {args.rate:g} req/s")  # fmt: skip
    print(f"fired: {len(fired)} in {span:.1f}s from the first due time ({len(fired) / max(span, 1e-9):.0f}/s), in "
          f"{len(rounds)} scheduler transactions of {rounds[len(rounds) // 2] if rounds else 0} (median)")  # fmt: skip
    print(f"exactly once: {audit.tasks} tasks, {len(fired) - twice} reminded once, {twice} twice, "
          f"{audit.missed} missed, {audit.unmarked} not marked reminded, {audit.queued} still queued; "
          f"{late} marked late")  # fmt: skip
    if twice or audit.missed or audit.unmarked or audit.queued or audit.tasks != expected:
        failed.append("not exactly once")
    fire_lags = [row.at - row.due for row in fired]
    stream_lags = [arrival.at - arrival.due for arrival in flood.arrivals]
    fired_at = {(row.user, row.task): row.at for row in fired}
    hops = [
        arrival.at - fired_at[arrival.user, arrival.task]
        for arrival in flood.arrivals
        if (arrival.user, arrival.task) in fired_at
    ]
    print(_lags("lag from remind_at to fired (feed_log.at)", fire_lags))
    print(_lags("lag from remind_at to a live stream", stream_lags))
    print(_lags("from fired (its batch's commit to come) to a stream", hops))
    seen = Counter((arrival.user, arrival.task) for arrival in flood.arrivals)
    stream_twice = sum(count - 1 for count in seen.values())
    print(f"streams: {len(seen)} of {args.streams * args.per_user} reminders arrived, {stream_twice} more than once")
    if len(seen) != args.streams * args.per_user or stream_twice:
        failed.append("streams did not get every reminder exactly once")
    overtaken, by = _overtaken(fired)
    disordered = _out_of_order_on_streams(flood.arrivals)
    print(f"order: {overtaken} fired after a reminder due later had fired (by at most {by * 1000:.0f} ms); "
          f"{disordered} reached a stream after one of its user's due later")  # fmt: skip

    flood_end = last_at if flood.all_fired else flood.first + args.window - 1
    rows = [
        ("without a flood", flood.baseline_samples, flood.baseline),
        ("while reminders fire", [sample for sample in flood.samples if flood.first <= sample[0] <= flood_end],
         flood.during),
        ("after the flood", [sample for sample in flood.samples if sample[0] > last_at + 1], flood.during),
    ]  # fmt: skip
    print(f"the mix at {args.rate:g} req/s (open loop; latency from each request's due time):")
    for label, chosen, load in rows:
        p50, p99, top = _percentiles([latency for _, latency, _ in chosen])
        reads, writes = (
            _percentiles([latency for _, latency, write in chosen if write is kind])[1] for kind in (False, True)
        )
        errors = f"  errors {load.errors} ({load.first_bad})" if load.errors else ""
        print(f"  {label:22s} {len(chosen):6d} requests  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {top:7.1f} ms"
              f"  (p99 of reads {reads:.1f}, of writes {writes:.1f}){errors}")  # fmt: skip
    p99 = [_percentiles([latency for _, latency, _ in chosen])[1] for _, chosen, _ in rows]
    ratio, ratio_after = p99[1] / p99[0], p99[1] / p99[2]
    print(f"  p99 while reminders fire / without: ×{ratio:.2f} (before the flood), ×{ratio_after:.2f} (after it)")
    baseline_start = min((due for due, _, _ in flood.baseline_samples), default=0.0)
    baseline_end = max((due for due, _, _ in flood.baseline_samples), default=0.0)
    doing = {
        "without a flood": flood.activity.mean(baseline_start, baseline_end),
        "while reminders fire": flood.activity.mean(flood.first, flood_end),
    }
    print("the database's busy backends, on average (sampled every 0.25 s):")
    for label, mean in doing.items():
        print(f"  {label:22s} " + ", ".join(f"{what} {count:.2f}" for what, count in list(mean.items())[:6]))
    print(f"the rest of the machine (other users' jobs) used {flood.others_cores[0]:.2f} cores without a flood, "
          f"{flood.others_cores[1]:.2f} from it on (of {os.cpu_count()}); inserting the flood took "
          f"{flood.insert_seconds:.1f}s")  # fmt: skip
    if flood.baseline.errors or flood.during.errors:
        failed.append("requests failed")
    if not flood.all_fired:
        failed.append(f"not every reminder fired within {args.max_wait:g}s")
    return {
        "fired": len(fired),
        "seconds_to_fire_all": span,
        "fired_per_second": len(fired) / max(span, 1e-9),
        "transactions": len(rounds),
        "twice": twice,
        "missed": audit.missed,
        "late": late,
        "lag_fired_ms": _percentiles(fire_lags),
        "lag_stream_ms": _percentiles(stream_lags),
        "fired_to_stream_ms": _percentiles(hops),
        "overtaken": overtaken,
        "overtaken_by_s": by,
        "stream_out_of_order": disordered,
        "p99_ms": dict(zip([label for label, _, _ in rows], p99, strict=True)),
        "p99_ratio": ratio,
        "p99_ratio_after": ratio_after,
        "database_backends": doing,
        "others_cores": flood.others_cores,
        "per_worker": flood.per_worker,
        "failed": failed,
    }


def _summary(reports: dict[str, list[dict[str, Any]]]) -> None:
    """Each build's figures, the median over rounds (and each round's where they scatter)."""
    print("\n" + f"{'medians over rounds':36s}" + "".join(f"{label:>34s}" for label in reports))

    def row(label: str, show: Any, *, each: bool = False) -> None:
        cells = []
        for runs in reports.values():
            values = [show(run) for run in runs]
            digits = _digits(values[0])
            cell = " / ".join(f"{median([value[i] for value in values]):.{digits[i]}f}" for i in range(len(digits)))
            if each and len(values) > 1:
                cell += " (" + ", ".join(f"{value[0]:.{digits[0]}f}" for value in values) + ")"
            cells.append(cell)
        print(f"{label:36s}" + "".join(f"{cell:>34s}" for cell in cells))

    row("fired per second", lambda run: (run["fired_per_second"],), each=True)
    row("seconds until all fired", lambda run: (run["seconds_to_fire_all"],))
    row("lag to fired: p50 / p99 / max, s", lambda run: tuple(ms / 1000 for ms in run["lag_fired_ms"]))
    row("lag to a stream: p50 / p99 / max, s", lambda run: tuple(ms / 1000 for ms in run["lag_stream_ms"]))
    row("fired to a stream: p50 / p99 / max, ms", lambda run: tuple(run["fired_to_stream_ms"]))
    row("marked late", lambda run: (run["late"],))
    row("fired after one due later", lambda run: (run["overtaken"],))
    row("the mix's p99 without / while, ms", lambda run: tuple(run["p99_ms"].values())[:2])
    row("p99 while firing / before", lambda run: (run["p99_ratio"],), each=True)
    row("p99 while firing / after", lambda run: (run["p99_ratio_after"],), each=True)
    row("others' cores: without / while", lambda run: tuple(run["others_cores"]))


def _digits(values: tuple[float, ...]) -> list[int]:
    """Decimals to show for each of `values`: none for counts and large numbers, two for small ones."""
    return [0 if isinstance(value, int) or abs(value) >= 100 else 2 if abs(value) < 10 else 1 for value in values]
