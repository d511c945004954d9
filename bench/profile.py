"""py-spy on ours under the workload: where a worker's CPU time goes, by layer.

Records every worker (`py-spy record --subprocesses --format raw`, i.e. collapsed stacks) while
workload.lua runs, then charges each sample to a layer by its innermost frame that belongs to
a known package (stdlib helpers are charged to their caller). Writes the summary to
bench/results/profile.txt (copy it into bench/PROFILE.md when it is worth keeping).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import APP_PYTHON, RESULTS, TARGETS, Prepared, Server, log, prepare, reset, wrk

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (layer, path fragments) — the first layer whose fragment occurs in a frame's file wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("auth: PyJWT + our bearer function", ("/jwt/", "handlers/auth.py", "handlers/jwks.py", "cryptography/")),
    (
        "Connexion: request validation (jsonschema)",
        (
            "/jsonschema/",
            "/jsonschema_specifications/",
            "/referencing/",
            "/rfc3339_validator",
            "todo_api/validation.py",
            "connexion/validators/",
            "connexion/json_schema.py",
        ),
    ),
    ("Connexion: security middleware", ("connexion/security.py", "connexion/middleware/security.py")),
    ("Connexion: routing, parameters, other middleware", ("/connexion/",)),
    ("Starlette: request/response objects, middleware", ("/starlette/", "todo_api/middleware.py")),
    ("SQLAlchemy: Core compile, execute, results, pool", ("/sqlalchemy/",)),
    ("greenlet (SQLAlchemy's async bridge)", ("/greenlet/",)),
    ("psycopg: adaptation, protocol, I/O", ("/psycopg/", "/psycopg_binary/", "/psycopg_pool/")),
    ("our handlers (incl. orjson via json_response)", ("handlers/",)),
    ("our persistence (SQL building, transactions)", ("persistence/",)),
    ("our problems/settings/app shell", ("todo_api/",)),
    ("uvicorn + httptools: HTTP parsing, ASGI plumbing", ("/uvicorn/", "/httptools/", "/h11/")),
    ("event loop (asyncio/uvloop)", ("/asyncio/", "/uvloop/")),
    ("logging", ("/logging/",)),
    ("JSON (stdlib json)", ("/json/",)),
]


def layer_of(file: str) -> str | None:
    file = "/" + file
    for layer, fragments in LAYERS:
        if any(fragment in file for fragment in fragments):
            return layer
    return None


PROCESS = re.compile(r'process \d+:"[^"]*"(?:;|$)')


def parse(collapsed: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """Collapsed stacks as (frames outermost first, count), without py-spy's `process` frames and
    without the supervisor's samples (those under one `process` frame; a worker's are under two)."""
    stacks = []
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if len(PROCESS.findall(stack)) == 1:
            continue  # the supervisor
        frames = []
        for frame in filter(None, PROCESS.sub("", stack).split(";")):
            match = FRAME.match(frame.strip())
            frames.append((match["function"], match["file"]) if match else (frame.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def summarise(collapsed: Path, *, requests: int, workers_cpu_ms: float) -> str:
    stacks = parse(collapsed)
    total = sum(count for _, count in stacks) or 1
    self_layer: collections.Counter[str] = collections.Counter()
    inclusive_layer: collections.Counter[str] = collections.Counter()
    self_function: collections.Counter[str] = collections.Counter()
    inclusive_function: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if not frames:
            frames = [("(no Python frame: uvloop/httptools C code)", "")]
        charged = next((layer for _, file in reversed(frames) if (layer := layer_of(file))), None)
        if charged is None:
            charged = "event loop C code (uvloop, no Python frame)" if not frames[-1][1] else "other (stdlib)"
        self_layer[charged] += count
        for layer in {layer_of(file) for _, file in frames} - {None}:
            inclusive_layer[layer] += count  # type: ignore[index]
        leaf_function, leaf_file = frames[-1]
        self_function[f"{leaf_function} ({_short(leaf_file)})"] += count
        for function, file in {(f, _short(p)) for f, p in frames}:
            inclusive_function[f"{function} ({file})"] += count
    per_request = workers_cpu_ms / max(requests, 1)
    out = [
        f"{total} sample units; {requests} requests measured; workers' CPU {per_request:.2f} ms per request",
        "",
        "Self time by layer (each sample charged to its innermost frame in a known package):",
        f"  {'layer':52s} {'share':>6s} {'≈ ms/request':>13s}",
    ]
    for layer, count in self_layer.most_common():
        out.append(f"  {layer:52s} {count / total:6.1%} {count / total * per_request:13.3f}")
    out += ["", "Inclusive time by layer (samples with the layer anywhere on the stack):"]
    for layer, count in inclusive_layer.most_common():
        out.append(f"  {layer:52s} {count / total:6.1%}")
    out += ["", "Top 30 functions by self time:"]
    for function, count in self_function.most_common(30):
        out.append(f"  {count / total:6.1%}  {function}")
    out += ["", "Top 45 functions by inclusive time:"]
    for function, count in inclusive_function.most_common(45):
        out.append(f"  {count / total:6.1%}  {function}")
    return "\n".join(out) + "\n"


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main(args: argparse.Namespace) -> int:
    target = TARGETS["ours"]
    prepared = prepare(target)
    RESULTS.mkdir(parents=True, exist_ok=True)
    common = dict(connections=args.connections, threads=args.threads, args=(str(prepared.data_file),))
    report = []
    if args.only in (None, "py-spy"):
        report += _py_spy(args, prepared, common)
    if args.only in (None, "cpu"):
        report += _on_cpu(args, prepared, common)
    text = "\n".join(report)
    (RESULTS / "profile.txt").write_text(text)
    print(text)
    log("collapsed stacks and this summary: bench/results/profile.*")
    return 0


def _py_spy(args: argparse.Namespace, prepared: Prepared, common: dict[str, Any]) -> list[str]:
    """py-spy from outside, on `todo-api serve --workers N` as deployed."""
    collapsed = RESULTS / "profile.py-spy.collapsed.txt"
    reset(prepared.target, prepared.max_id)
    with Server(prepared.target, workers=args.workers) as server:
        wrk(server.base, "workload.lua", duration=args.warmup, **common)
        command = [PY_SPY, "record", "--pid", str(server.process.pid), "--subprocesses", "--rate", str(args.rate),
                   "--duration", str(round(args.duration)), "--format", "raw", "--output", str(collapsed),
                   "--nonblocking"]  # fmt: skip
        log("  " + " ".join(command))
        # Reaped only after wrk's CPU accounting, which counts reaped children.
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = wrk(server.base, "workload.lua", duration=args.duration, server=server, **common)
        recorder.wait(timeout=60)
        if args.svg:
            svg = ["--format", "flamegraph", "--output", str(RESULTS / "profile.svg"), "--nonblocking"]
            recorder = subprocess.Popen(command[:-5] + svg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wrk(server.base, "workload.lua", duration=args.duration, **common)
            recorder.wait(timeout=60)
    return [
        "=" * 100,
        f"1. py-spy: wall-clock samples of threads that are running *or runnable*, {args.workers} workers",
        f"   command: {' '.join(command)}",
        f"   load under py-spy: {load.line()}",
        "=" * 100,
        summarise(collapsed, requests=load.requests, workers_cpu_ms=load.server_cpu_ms * load.requests),
    ]


def _on_cpu(args: argparse.Namespace, prepared: Prepared, common: dict[str, Any]) -> list[str]:
    """On-CPU samples from inside one worker (see bench/cpu_sampler.py)."""
    collapsed = RESULTS / "profile.cpu.collapsed.txt"
    reset(prepared.target, prepared.max_id)
    sampler = [APP_PYTHON, "-m", "bench.cpu_sampler", "{port}"]
    with Server(prepared.target, workers=1, command=sampler, env={"BENCH_PROFILE_OUT": str(collapsed)}) as server:
        wrk(server.base, "workload.lua", duration=args.warmup, **common)
        os.kill(server.process.pid, signal.SIGUSR1)
        load = wrk(server.base, "workload.lua", duration=args.duration, server=server, **common)
        os.kill(server.process.pid, signal.SIGUSR2)
        time.sleep(1)
    return [
        "=" * 100,
        "2. on-CPU samples (ITIMER_PROF, weighted by CPU µs) inside one uvicorn worker: bench/cpu_sampler.py",
        f"   command: {' '.join(sampler)} (same app factory and uvicorn settings as todo-api serve)",
        f"   load: {load.line()}",
        "=" * 100,
        summarise(collapsed, requests=load.requests, workers_cpu_ms=load.server_cpu_ms * load.requests),
    ]
