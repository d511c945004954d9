"""What one request of the workload's mix costs ours, in-process, with and without each CPU lever:
instructions counted by Valgrind's callgrind (deterministic, so a 2 % lever shows on a machine
whose timings move by 20 %), or CPU time.

Each run is a fresh process under the service's venv that builds the app as a worker does, runs
its lifespan (the real pool on the real database), drives the mix through httpx's ASGI transport
(no sockets; the client's cost is the same in every variant) after a warm-up, and counts only the
measured requests. The levers start from upstream Connexion with the collector left alone:
  connexion-once   todo_api.connexion_app (decorators built once, not per request)
  gc-freeze        gc.freeze() once the app is built, as `todo-api serve`'s workers do
and one variant that is not a lever:
  client-only      an app that answers every request at once: the client's and the ASGI
                   transport's own part of every figure, to subtract for the app's alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

LEVERS = ("connexion-once", "gc-freeze", "client-only")
MIX = [(50, "list"), (20, "get"), (15, "create"), (10, "complete"), (5, "update")]


def main(args: argparse.Namespace) -> int:
    from bench.harness import APP_PYTHON, RESULTS, ROOT, log, median, prepare, reset, save, target, task_ids, token

    variants = ["", *(v for v in args.levers.split(",") if v)]
    for variant in variants:
        if unknown := set(filter(None, variant.split("+"))) - set(LEVERS):
            raise SystemExit(f"unknown levers {sorted(unknown)}: choose from {', '.join(LEVERS)}")
    chosen = target("ours")
    prepared = prepare(chosen)
    ids = task_ids(chosen)
    payload = json.dumps({"tokens": {user: token(user) for user in sorted(ids)}, "ids": ids})
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    for number in range(args.rounds):
        for variant in variants if number % 2 == 0 else variants[::-1]:
            reset(chosen, prepared.max_id)
            env = {**chosen.env(), "BENCH_LEVERS": variant, "BENCH_REQUESTS": str(args.requests),
                   "BENCH_MIX": args.only, "PYTHONHASHSEED": "0"}  # fmt: skip
            command = [APP_PYTHON, "-m", "bench.cpucost", "--inner"]
            callgrind = RESULTS / "cpucost.callgrind"
            if args.count == "instructions":
                command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={callgrind}", *command]  # fmt: skip
            results[variant].append(
                _run(command, payload, env, ROOT, callgrind if args.count == "instructions" else None)
            )
            log(f"  round {number + 1} {variant or 'upstream'}: {results[variant][-1]}")
    unit = "instructions (M)" if args.count == "instructions" else "CPU ms"
    key = "instructions" if args.count == "instructions" else "cpu_ms"
    base = median([r[key] for r in results[""]])
    print(f"{unit} per request, in-process, {args.requests} requests of {args.only or 'the mix'} per run, "
          f"median of {args.rounds} alternating runs; full collections in the measured requests "
          "(their longest in wall time, timing-dependent):")  # fmt: skip
    for variant in variants:
        value = median([r[key] for r in results[variant]])
        full = median([r["full_collections"] for r in results[variant]])
        longest = max(r["longest_full_ms"] for r in results[variant])
        ratio = (
            ""
            if not variant
            else f"   ×{value / base:.3f} ({', '.join(f'{r[key] / base:.3f}' for r in results[variant])})"
        )
        print(f"  {variant or 'upstream':32s} {value:8.3f}{ratio}   full GCs {full:g}, longest {longest:.1f} ms")
    save("cpucost", {"args": vars(args), "results": results})
    return 0


def _run(command: list[str], payload: str, env: dict[str, str], cwd: Path, callgrind: Path | None) -> dict[str, float]:
    """One inner run; under callgrind, instrumentation is on for the measured requests only."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(payload + "\n")
    process.stdin.flush()
    for step in ("on", "off"):
        line = process.stdout.readline()  # "warm", then "measured"
        if not line:
            break
        if callgrind:
            subprocess.run(["callgrind_control", "-i", step, str(process.pid)], check=True, capture_output=True)
        process.stdin.write("go\n")
        process.stdin.flush()
    output, errors = process.communicate(timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"inner run failed ({process.returncode}):\n{output}\n{errors[-3000:]}")
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    if callgrind:
        collected = re.search(r"Collected : (\d+)", errors)
        assert collected, errors[-2000:]
        result["instructions"] = int(collected.group(1)) / result.pop("requests") / 1e6
    return result


async def _inner() -> None:
    import httpx

    from todo_api import app as application

    data = json.loads(sys.stdin.readline())
    levers = set(filter(None, os.environ.get("BENCH_LEVERS", "").split("+")))
    application.App = functools.partial(application.App, once="connexion-once" in levers)  # type: ignore[misc]
    app = _client_only if "client-only" in levers else application.create_app()
    if "gc-freeze" in levers:
        gc.freeze()
    full_collections: list[float] = []  # each one's seconds: a pause for every request in flight

    def count(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                full_collections.append(time.perf_counter())
            else:
                full_collections[-1] = time.perf_counter() - full_collections[-1]

    rng = random.Random(42)
    only = os.environ.get("BENCH_MIX")
    operations = [name for weight, name in MIX for _ in range(weight) if not only or name == only]
    users = sorted(data["tokens"])

    async def one(client: httpx.AsyncClient, counter: int) -> None:
        user = rng.choice(users)
        headers = {"Authorization": "Bearer " + data["tokens"][user], "Content-Type": "application/json"}
        task_id = rng.choice(data["ids"][user])
        operation = rng.choice(operations)
        if operation == "list":
            response = await client.get("/api/tasks?limit=50", headers=headers)
        elif operation == "get":
            response = await client.get(f"/api/tasks/{task_id}", headers=headers)
        elif operation == "create":
            body = {"title": f"Task {counter}", "description": "Created under load", "priority": "high",
                    "tags": ["bench", f"t{counter % 7}"]}  # fmt: skip
            response = await client.post("/api/tasks", json=body, headers=headers)
        elif operation == "complete":
            response = await client.patch(f"/api/tasks/{task_id}/complete", content=b"", headers=headers)
        else:
            response = await client.patch(
                f"/api/tasks/{task_id}", json={"title": f"Renamed {counter}"}, headers=headers
            )
        if response.status_code >= 300:
            raise SystemExit(f"{operation}: {response.status_code} {response.text}")

    count_requests = int(os.environ["BENCH_REQUESTS"])
    async with _lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
        for counter in range(count_requests // 5):  # warm-up: connections, caches
            await one(client, counter)
        await _step("warm")
        gc.callbacks.append(count)
        started = time.process_time()
        for counter in range(count_requests):
            await one(client, counter)
        spent = time.process_time() - started
        gc.callbacks.remove(count)
        await _step("measured")
    longest = max(full_collections, default=0) * 1000
    print(json.dumps({"cpu_ms": spent * 1000 / count_requests, "full_collections": len(full_collections),
                      "longest_full_ms": longest, "requests": count_requests}))  # fmt: skip


async def _client_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    status = 201 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _step(name: str) -> None:
    """Tell the outer process where we are and wait for it (it toggles callgrind meanwhile)."""
    print(name, flush=True)
    await asyncio.to_thread(sys.stdin.readline)


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """The ASGI lifespan protocol as a server runs it: startup before, shutdown after."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


if __name__ == "__main__":
    if "--inner" in sys.argv:
        asyncio.run(_inner())
