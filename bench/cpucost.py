"""CPU per request of ours, in-process and sequential, with and without candidate patches
(bench/experiments.py), alternating A B A B in fresh processes: a precise way to size a
recommendation on a noisy machine, since only this process's CPU time is counted.

Each inner process builds the app exactly as a worker does, drives the workload's mix through
httpx's ASGI transport (no sockets; the client's own cost is the same in A and B), and prints
its CPU time per request. The database round trips are real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time


def main(args: argparse.Namespace) -> int:
    from bench.harness import APP_PYTHON, ROOT, log, median, prepare, reset, save, target, task_ids, token

    variants = ["", *args.patches.split(",")]
    chosen = target("ours")
    prepared = prepare(chosen)
    ids = task_ids(chosen)
    users = sorted(ids)
    payload = json.dumps({"tokens": {user: token(user) for user in users}, "ids": ids})
    results: dict[str, list[float]] = {variant: [] for variant in variants}
    for number in range(args.rounds):
        for variant in variants if number % 2 == 0 else variants[::-1]:
            reset(chosen, prepared.max_id)
            env = {
                **chosen.env(),
                "BENCH_PATCHES": variant,
                "BENCH_REQUESTS": str(args.requests),
                "BENCH_MIX": args.only,
            }
            finished = subprocess.run(
                [APP_PYTHON, "-m", "bench.cpucost", "--inner"],
                input=payload, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if finished.returncode != 0:
                print(finished.stdout + finished.stderr)
                return 1
            results[variant].append(float(finished.stdout.split()[-1]))
        log(f"  round {number + 1}: " + ", ".join(f"{v or 'ours'} {results[v][-1]:.3f}" for v in variants))
    base = median(results[""])
    print(f"CPU ms per request, in-process, sequential, {args.requests} requests of {args.only or 'the mix'} per run, "
          f"median of {args.rounds} alternating runs:")  # fmt: skip
    for variant in variants:
        value = median(results[variant])
        print(f"  {('ours+' + variant) if variant else 'ours':45s} {value:6.3f} ms"
              + ("" if not variant else f"   {value - base:+.3f} ms ({value / base - 1:+.1%})"))  # fmt: skip
    save("cpucost", {"args": vars(args), "results": results})
    return 0


MIX = [(50, "list"), (20, "get"), (15, "create"), (10, "complete"), (5, "update")]


async def _inner() -> None:
    import httpx

    from bench.experiments import apply

    apply([patch for patch in os.environ.get("BENCH_PATCHES", "").split("+") if patch])
    from persistence import database
    from todo_api.app import create_app
    from todo_api.settings import load

    data = json.loads(sys.stdin.read())
    settings = load()
    app = create_app(settings)
    await database.open_pool(settings.database_url or "", pool_size=settings.db_pool_size)
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

    count = int(os.environ["BENCH_REQUESTS"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for counter in range(count // 5):  # warm-up: connections, caches
            await one(client, counter)
        started = time.process_time()
        for counter in range(count):
            await one(client, counter)
        spent = time.process_time() - started
    await database.close_pool()
    print(f"{spent * 1000 / count:.4f}")


if __name__ == "__main__":
    if "--inner" in sys.argv:
        asyncio.run(_inner())
