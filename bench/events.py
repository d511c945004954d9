"""Live sync under the workload (`bench/run events`): how soon a change reaches a stream held by
another process, what the workload loses to 1 000 idle streams, what a stream costs in memory, and
how many streams one worker holds.

Two servers on the bench database: the writer W (`--workers`, default 2) serves wrk's workload;
S (one worker) holds the streams that the latency and capacity figures are about.
- Latency: probe users (not in the workload), each followed by a stream on S, get a task created
  through W every 1/--probe-rate s while wrk runs: from the creating transaction's start (the
  task's created_at, a moment before its commit, so the figure errs long) to the event's arrival,
  and for reference from W's 201 (which the load may delay past the arrival).
- Idle streams: wrk on W (reset, restarted and warmed up for each run) without and with 1 000
  streams open on W itself (1 000 users who write nothing: only heartbeats reach them),
  alternately over --rounds, in one run: throughput, p99 and server CPU per request, as ratios.
- Memory and capacity: streams opened on S in steps of 1 000 up to --cap, --per-user each
  (MAX_STREAMS_PER_USER raised to it): S's RSS and /health's latency at each step, until a stream
  is refused or the cap; S's CPU over one heartbeat period while they idle; then a change for a
  few users that every one of their streams must get.
The client is one asyncio loop reading raw HTTP/1.1 (a data line of an event is one chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from bench.harness import Load, Prepared, Server, cpu_seconds, log, prepare, reset, save, target, token, wrk

STEP = 1000
RETRIES_503 = 5
IDLE_SECONDS = 15  # the service's heartbeat period: every stream gets one comment in it
PROBE_USERS = 10
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per wrk run (default 15)")
    parser.add_argument("--warmup", type=float, default=5, help="wrk warm-up seconds (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of without/with idle streams (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="the writer's workers (default 2)")
    parser.add_argument("--connections", type=int, default=100, help="wrk connections (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--idle", type=int, default=1000, help="idle streams on the writer (default 1000)")
    parser.add_argument("--probe-rate", type=float, default=10, help="probe writes per second (default 10)")
    parser.add_argument("--cap", type=int, default=5000, help="streams opened on one worker at most (default 5000)")
    parser.add_argument("--per-user", type=int, default=25, help="streams per user in the capacity run (default 25)")


# --- the client: streams and probe writes on one event loop in a thread --------------------------


class Loop:
    """A uvloop event loop in a thread of its own; `run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Stream:
    writer: asyncio.StreamWriter
    events: int = 0  # data lines read
    last_at: float = 0.0  # time.time() when the last one came
    reading: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self.reading:
            self.reading.cancel()
        self.writer.close()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def open_stream(port: int, bearer: str, on_data: Callable[[bytes], None] | None = None) -> Stream:
    """A stream of GET /api/tasks/events, once its `: connected` line has come; RuntimeError if refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/tasks/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {bearer}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    status, headers = await _head(reader)
    if status != 200:
        body = await reader.read(int(headers.get("content-length", "0")))
        writer.close()
        raise Refused(status, float(headers.get("retry-after", "1")), body.decode(errors="replace"))
    while b": connected" not in (line := await reader.readline()):
        if not line:
            raise RuntimeError("ended before `: connected`")
    stream = Stream(writer)

    async def read() -> None:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                stream.events += 1
                stream.last_at = time.time()
                if on_data:
                    on_data(line[6:])

    stream.reading = asyncio.create_task(read())
    return stream


class Refused(RuntimeError):
    def __init__(self, status: int, retry_after: float, body: str) -> None:
        super().__init__(f"{status} answered: {body}")
        self.status, self.retry_after = status, retry_after


async def open_streams(
    port: int, bearers: list[str], on_data: Callable[[bytes], None] | None = None, *, at_once: int = 50
) -> tuple[list[Stream], list[str]]:
    """A stream for each of `bearers`, `at_once` being opened at a time (a 503 tried again after its
    Retry-After): the open ones, and the failures."""
    gate = asyncio.Semaphore(at_once)

    async def one(bearer: str) -> Stream | str:
        attempts = 0
        while True:
            async with gate:
                try:
                    return await asyncio.wait_for(open_stream(port, bearer, on_data), 30)
                except Refused as error:
                    attempts += 1
                    if error.status != 503 or attempts > RETRIES_503:
                        return str(error)
                    wait = error.retry_after  # the service is shedding load: as a client would, later
                except (OSError, RuntimeError, TimeoutError, IndexError, ValueError) as error:
                    return f"{type(error).__name__}: {error}"
            await asyncio.sleep(wait)

    results = await asyncio.gather(*(one(bearer) for bearer in bearers))
    return [r for r in results if isinstance(r, Stream)], [r for r in results if isinstance(r, str)]


async def close_streams(streams: list[Stream]) -> None:
    for stream in streams:
        stream.close()
    await asyncio.sleep(0)


@dataclass
class Probe:
    """Tasks created for probe users through the writer, and their arrival on the probe streams."""

    sent: dict[str, tuple[float, float]] = field(default_factory=dict)  # title → (sent, answered), time.time()
    arrived: dict[str, tuple[float, float]] = field(default_factory=dict)  # title → (arrival, created_at)
    failed: list[str] = field(default_factory=list)  # titles whose POST was not a 201

    def on_data(self, data: bytes) -> None:
        now = time.time()
        entry = json.loads(data)
        task = entry.get("task") or {}
        if entry.get("type") == "upsert" and task.get("title", "").startswith("probe "):
            self.arrived.setdefault(task["title"], (now, datetime.fromisoformat(task["created_at"]).timestamp()))

    async def write(self, port: int, bearers: list[str], rate: float, stop: asyncio.Event, tag: str) -> None:
        """POSTs round the probe users, one due every 1/`rate` s whether or not earlier ones were answered."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        writes: set[asyncio.Task[None]] = set()
        number = 0
        while not stop.is_set():
            write = asyncio.create_task(self._create(port, bearers[number % len(bearers)], f"probe {tag} {number}"))
            writes.add(write)
            write.add_done_callback(writes.discard)
            number += 1
            due += 1 / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
        await asyncio.gather(*writes)

    async def _create(self, port: int, bearer: str, title: str) -> None:
        body = json.dumps({"title": title}).encode()
        sent = time.time()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /api/tasks HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {bearer}\r\n"
                f"Connection: close\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            try:
                status, headers = await _head(reader)
                await reader.readexactly(int(headers.get("content-length", "0")))
            finally:
                writer.close()
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            status = 0
        if status == 201:
            self.sent[title] = (sent, time.time())
        else:
            self.failed.append(title)

    def latencies(self, tag: str) -> dict[str, Any]:
        prefix = f"probe {tag} "
        mine = {title: times for title, times in self.sent.items() if title.startswith(prefix)}
        commit = [self.arrived[t][0] - self.arrived[t][1] for t in mine if t in self.arrived]
        answer = [self.arrived[t][0] - answered for t, (_, answered) in mine.items() if t in self.arrived]
        return {
            "writes": len(mine),
            "failed": sum(title.startswith(prefix) for title in self.failed),
            "missing": sum(t not in self.arrived for t in mine),
            "from_commit_ms": _percentiles(commit),
            "from_answer_ms": _percentiles(answer),
            "samples_ms": [round(seconds * 1000, 2) for seconds in commit],
        }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(seconds)

    def ms(quantile: float) -> float:
        return ordered[round(quantile * (len(ordered) - 1))] * 1000

    return {"p50": ms(0.5), "p99": ms(0.99), "max": ordered[-1] * 1000}


# --- measurements ------------------------------------------------------------------------------


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def health_ms(base: str, count: int = 20) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/health", timeout=30):
            pass
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def workload_with_probes(
    loop: Loop, writer: Server, probe: Probe, bearers: list[str], args: argparse.Namespace, data: Path, tag: str
) -> tuple[Load, dict[str, Any]]:
    stop = asyncio.Event()
    writing = asyncio.run_coroutine_threadsafe(probe.write(writer.port, bearers, args.probe_rate, stop, tag), loop.loop)
    load = wrk(writer.base, "workload.lua", duration=args.duration, connections=args.connections,
               threads=args.threads, args=(str(data),), server=writer)  # fmt: skip
    loop.loop.call_soon_threadsafe(stop.set)
    writing.result(30)
    deadline = time.monotonic() + 10  # stragglers
    while time.monotonic() < deadline and probe.latencies(tag)["missing"]:
        time.sleep(0.05)
    return load, probe.latencies(tag)


def measure(
    loop: Loop, prepared: Prepared, probe: Probe, bearers: list[str], args: argparse.Namespace, *, idle: int, tag: str
) -> dict[str, Any]:
    """The seeded state, a fresh writer warmed up, `idle` streams opened on it, then wrk and the probes."""
    reset(prepared.target, prepared.max_id)
    with Server(prepared.target, workers=args.workers) as writer:
        if args.warmup > 0:
            wrk(writer.base, "workload.lua", duration=args.warmup, connections=args.connections,
                threads=args.threads, args=(str(prepared.data_file),))  # fmt: skip
        idle_streams, failed = loop.run(open_streams(writer.port, [token(f"idle{n:05d}") for n in range(idle)]))
        assert not failed, failed[:3]
        load, latency = workload_with_probes(loop, writer, probe, bearers, args, prepared.data_file, tag)
        loop.run(close_streams(idle_streams))
    return {"idle": idle, "load": vars(load) | {"rps": load.rps}, "line": load.line(), "latency": latency}


def capacity(loop: Loop, streams_server: Server, writer: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Streams opened on S in steps until refused or --cap: RSS and /health at each step, then liveness."""
    pids = streams_server.worker_pids()
    steps = [{"streams": 0, "rss_mib": rss_mib(pids), "health_ms": health_ms(streams_server.base)}]
    users = [f"cap{n:05d}" for n in range(-(-args.cap // args.per_user))]
    bearers = [token(user) for user in users for _ in range(args.per_user)][: args.cap]
    held: list[Stream] = []
    failures: list[str] = []
    for start in range(0, len(bearers), STEP):
        opened, failures = loop.run(open_streams(streams_server.port, bearers[start : start + STEP]))
        held += opened
        time.sleep(1)  # let the worker settle before reading its memory
        steps.append({"streams": len(held), "rss_mib": rss_mib(pids), "health_ms": health_ms(streams_server.base)})
        log(f"  {len(held)} streams open on one worker: RSS {steps[-1]['rss_mib']:.0f} MiB")
        if failures:
            break
    # What the held streams cost while nothing happens: a heartbeat period's CPU.
    spent = sum(cpu_seconds(pids).values())
    time.sleep(IDLE_SECONDS)
    idle_cpu = (sum(cpu_seconds(pids).values()) - spent) / IDLE_SECONDS
    # Liveness: a change for a few users reaches every one of their streams, from its commit.
    chosen = random.Random(1).sample(range(len(held) // args.per_user), min(5, len(held) // args.per_user))
    watched = {n: held[n * args.per_user : (n + 1) * args.per_user] for n in chosen}
    before = {id(stream): stream.events for streams in watched.values() for stream in streams}
    committed = {}
    for n in chosen:
        request = urllib.request.Request(
            writer.base + "/api/tasks", data=b'{"title": "to every stream"}', method="POST",
            headers={"Authorization": f"Bearer {token(users[n])}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            committed[n] = datetime.fromisoformat(json.loads(response.read())["created_at"]).timestamp()
    every = [(n, stream) for n, streams in watched.items() for stream in streams]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(stream.events == before[id(stream)] for _, stream in every):
        time.sleep(0.02)
    delays = [stream.last_at - committed[n] for n, stream in every if stream.events > before[id(stream)]]
    loop.run(close_streams(held))
    return {
        "steps": steps,
        "held": len(held),
        "failures": failures[:3],
        "idle_cpu_share": idle_cpu,
        "liveness": {"streams": len(every), "reached": len(delays), "from_commit_ms": _percentiles(delays)},
    }


def main(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.cap + args.idle + 1000
    if max(soft, hard) < needed:
        raise SystemExit(f"open files are limited to {hard}; --cap {args.cap} needs about {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    ours = target("ours")
    log(f"live sync under the workload: writer with {args.workers} workers, streams on another process; "
        f"{args.rounds} rounds of {args.duration:g}s without/with {args.idle} idle streams")  # fmt: skip
    prepared = prepare(ours)
    streams_server = Server(ours, workers=1, migrate=False, env={"MAX_STREAMS_PER_USER": str(args.per_user)})
    loop = Loop()
    probe = Probe()
    probe_bearers = [token(f"probe{n:02d}") for n in range(PROBE_USERS)]
    runs: list[dict[str, Any]] = []
    try:
        with streams_server:
            probes, refused = loop.run(open_streams(streams_server.port, probe_bearers, probe.on_data))
            assert not refused, refused
            for number in range(args.rounds):
                # Each order in turn, so that drift in the machine's load hits both alike.
                for idle in (0, args.idle) if number % 2 == 0 else (args.idle, 0):
                    run = measure(loop, prepared, probe, probe_bearers, args, idle=idle, tag=f"r{number}i{idle}")
                    runs.append({"round": number + 1, **run})
                    print(f"round {number + 1} {idle:5d} idle streams: {run['line']}", flush=True)
                    print(_latency_line("  event latency", run["latency"]), flush=True)
            loop.run(close_streams(probes))
            log(f"capacity: streams on one worker, {args.per_user} per user, up to {args.cap}")
            with Server(ours, workers=1, migrate=False) as writer:
                held = capacity(loop, streams_server, writer, args)
    finally:
        loop.close()
    report(runs, held, args)
    path = save("events", {"args": vars(args), "runs": runs, "capacity": held})
    log(f"saved {path}")
    clean = all(not (run["load"]["errors"] or run["latency"]["missing"] or run["latency"]["failed"]) for run in runs)
    return 0 if clean else 1


def _latency_line(label: str, latency: dict[str, Any]) -> str:
    commit, answer = latency["from_commit_ms"], latency["from_answer_ms"]
    return (
        f"{label}: from commit p50 {commit['p50']:.1f} ms, p99 {commit['p99']:.1f} ms, max {commit['max']:.1f} ms"
        f" | from the writer's 201 p50 {answer['p50']:.1f} ms, p99 {answer['p99']:.1f} ms"
        f" | {latency['writes']} writes, {latency['missing']} missing, {latency['failed']} not created"
    )


def report(runs: list[dict[str, Any]], held: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    if runs:
        _report_workload(runs, args)
    _report_capacity(held, args)


def _report_workload(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    without = [run for run in runs if not run["idle"]]
    with_idle = [run for run in runs if run["idle"]]
    for label, chosen in (("without idle streams", without), (f"with {args.idle} idle streams", with_idle)):
        rps = statistics.median(run["load"]["rps"] for run in chosen)
        p99 = statistics.median(run["load"]["p99_ms"] for run in chosen)
        print(f"workload {label:24s} {rps:7.0f} req/s  p99 {p99:7.2f} ms   (medians over {len(chosen)} runs)")
    pairs = list(zip(without, with_idle, strict=True))
    ratios = {
        "throughput": [b["load"]["rps"] / a["load"]["rps"] for a, b in pairs],
        "p99": [b["load"]["p99_ms"] / a["load"]["p99_ms"] for a, b in pairs],
        "server CPU per request": [b["load"]["server_cpu_ms"] / a["load"]["server_cpu_ms"] for a, b in pairs],
    }
    print(
        "with/without idle streams: "
        + ", ".join(
            f"{name} ×{statistics.median(values):.2f} ({', '.join(f'{x:.2f}' for x in values)})"
            for name, values in ratios.items()
        )
    )
    for label, chosen in (("without idle streams", without), (f"with {args.idle} idle streams", with_idle)):
        pooled = _percentiles([ms / 1000 for run in chosen for ms in run["latency"]["samples_ms"]])
        print(
            f"event latency, commit → a stream on another process, {label}: p50 {pooled['p50']:.1f} ms,"
            f" p99 {pooled['p99']:.1f} ms, max {pooled['max']:.1f} ms"
            f" ({sum(run['latency']['writes'] for run in chosen)} writes,"
            f" {sum(run['latency']['missing'] for run in chosen)} missing)"
        )
    print()


def _report_capacity(held: dict[str, Any], args: argparse.Namespace) -> None:
    steps = held["steps"]
    print("streams on one worker   RSS        /health p50")
    for step in steps:
        print(f"  {step['streams']:6d}             {step['rss_mib']:6.0f} MiB  {step['health_ms']:6.2f} ms")
    if len(steps) > 1:
        per_thousand = [
            (b["rss_mib"] - a["rss_mib"]) * STEP / (b["streams"] - a["streams"])
            for a, b in itertools.pairwise(steps)
            if b["streams"] > a["streams"]
        ]
        print(
            f"RSS per {STEP} idle streams: {statistics.median(per_thousand):.1f} MiB (median of the steps: "
            + ", ".join(f"{x:.1f}" for x in per_thousand)
            + ")"
        )
    ended = f"refused: {held['failures']}" if held["failures"] else f"the cap, {args.cap}"
    live = held["liveness"]
    print(f"held {held['held']} streams on one worker, until {ended}")
    print(
        f"holding them idle (a heartbeat each per {IDLE_SECONDS} s) took {held['idle_cpu_share']:.1%} of a core: "
        f"{held['idle_cpu_share'] * 1000 * STEP / max(1, held['held']):.1f} ms of CPU per second per {STEP} streams"
    )
    delay = live["from_commit_ms"]
    print(
        f"then a change for each of {live['streams'] // args.per_user} users reached {live['reached']} of their "
        f"{live['streams']} streams, from commit p50 {delay['p50']:.0f} ms, max {delay['max']:.0f} ms"
    )
