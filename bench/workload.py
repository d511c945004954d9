"""The realistic workload (workload.lua under wrk) against one target, or ours against baselines
in alternation (A B A B …), with per-round figures and median ratios."""

from __future__ import annotations

import argparse
import json
import urllib.request
from typing import Any

from bench import openloop
from bench.harness import Load, Prepared, Server, log, median, prepare, reset, save, target, task_ids, token, wrk

TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "status", "priority", "tags", "due_date",
    "recurrence", "time_zone", "remind_at", "created_at", "updated_at",
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, *, duration: float, warmup: float) -> None:
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"measured seconds per run (default {duration:g})"
    )
    parser.add_argument(
        "--warmup", type=float, default=warmup, help=f"warm-up seconds before each run (default {warmup:g})"
    )
    parser.add_argument("--workers", type=int, default=2, help="server worker processes, the same for all (default 2)")
    parser.add_argument("--connections", type=int, default=100, help="concurrent connections (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")


def measure(prepared: Prepared, args: argparse.Namespace) -> Load:
    """Seeded state, a fresh server, warm-up, then the measured run."""
    reset(prepared.target, prepared.max_id)
    with Server(prepared.target, workers=args.workers) as server:
        check_behaviour(server, prepared)
        common = dict(connections=args.connections, threads=args.threads, args=(str(prepared.data_file),))
        if args.warmup > 0:
            warm = wrk(server.base, "workload.lua", duration=args.warmup, **common)
            if warm.errors:
                raise SystemExit(f"{prepared.target.name}: {warm.errors} errors during warm-up: {warm.error_detail}")
        return wrk(server.base, "workload.lua", duration=args.duration, server=server, **common)


def measure_open(prepared: Prepared, args: argparse.Namespace, rate: float) -> openloop.OpenLoad:
    """Seeded state, a fresh server, warm-up, then the mix offered at `rate` requests per second."""
    reset(prepared.target, prepared.max_id)
    users = {user: (token(user), ids) for user, ids in task_ids(prepared.target).items()}
    with Server(prepared.target, workers=args.workers) as server:
        check_behaviour(server, prepared)
        if args.warmup > 0:
            openloop.run(server.port, users, rate=rate, duration=args.warmup)
        return openloop.run(server.port, users, rate=rate, duration=args.duration)


def check_behaviour(server: Server, prepared: Prepared) -> None:
    """Each of the workload's operations once, answered as todo-api's contract says; the
    baselines must behave alike for the comparison to mean anything."""
    auth = {"Authorization": "Bearer " + token("u000")}

    def call(method: str, path: str, body: bytes | None = None, json_type: bool = False) -> tuple[int, Any, Any]:
        headers = {**auth, **({"Content-Type": "application/json"} if json_type else {})}
        url = path if path.startswith("http") else server.base + path
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())

    def expect(condition: bool, what: str) -> None:
        if not condition:
            raise SystemExit(f"{prepared.target.name} does not behave like the contract: {what}")

    status, headers, page = call("GET", "/api/tasks?limit=20")
    expect(status == 200 and len(page) == 20 and set(page[0]) == TASK_FIELDS, f"list: {status} {page[:1]}")
    link = headers.get("Link", "")
    expect(link.startswith("<") and link.endswith('>; rel="next"'), f"list Link header: {link!r}")
    status, _, rest = call("GET", link[1 : link.index(">")])
    expect(status == 200 and rest and rest[0]["created_at"] <= page[-1]["created_at"], "second page")
    task_id = page[0]["id"]
    status, headers, task = call("GET", f"/api/tasks/{task_id}")
    expect(status == 200 and task["id"] == task_id and headers.get("ETag"), f"get: {status} {task}")
    status, _, toggled = call("PATCH", f"/api/tasks/{task_id}/complete", b"", json_type=True)
    expect(status == 200 and toggled["completed"] is not task["completed"], f"toggle: {status} {toggled}")
    status, _, renamed = call("PATCH", f"/api/tasks/{task_id}", b'{"title": "  Renamed  "}', json_type=True)
    expect(status == 200 and renamed["title"] == "Renamed", f"update: {status} {renamed}")
    body = b'{"title": "Check", "priority": "high", "tags": ["a", "A", "b"], "due_date": "2030-01-31T17:00:00Z"}'
    status, headers, created = call("POST", "/api/tasks", body, json_type=True)
    expect(
        status == 201 and created["tags"] == ["a", "b"] and created["due_date"] == "2030-01-31T17:00:00Z"
        and headers.get("Location") == f"/api/tasks/{created['id']}" and headers.get("ETag"),
        f"create: {status} {created}",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    chosen = target(args.target)
    log(f"workload on {chosen.name} ({chosen.description}): {args.connections} connections, "
        f"{args.workers} workers, {args.warmup:g}s warm-up + {args.duration:g}s")  # fmt: skip
    load = measure(prepare(chosen), args)
    print(f"{chosen.name:12s} {load.line()}")
    if load.errors:
        print(f"FAILED: {load.errors} errors {load.error_detail}")
        return 1
    save(f"run-{chosen.name}", {"target": chosen.name, "args": vars(args), "load": vars(load) | {"rps": load.rps}})
    return 0


def compare(args: argparse.Namespace) -> int:
    names = ["ours", *(name for name in args.against.split(",") if name and name != "ours")]
    log(f"comparing {' vs '.join(names)}: {args.rounds} rounds, {args.warmup:g}s warm-up + {args.duration:g}s each, "
        f"{args.connections} connections, {args.workers} workers each")  # fmt: skip
    prepared = {name: prepare(target(name)) for name in names}
    rounds: list[dict[str, Load]] = []
    failed = False
    for number in range(args.rounds):
        # Rotate the order each round so that drift in the machine's load hits every target alike.
        order = names[number % len(names) :] + names[: number % len(names)]
        results: dict[str, Load] = {}
        for name in order:
            results[name] = measure(prepared[name], args)
            print(f"round {number + 1}  {name:{max(map(len, names))}s} {results[name].line()}", flush=True)
            if results[name].errors:
                print(f"  errors: {results[name].error_detail}")
                failed = True
        rounds.append(results)

    width = max(map(len, names)) + 1
    print()
    print(
        f"{'target':{width}s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'p99/p50':>8s} {'errors':>7s}"
        f" {'srv CPU/req':>12s} {'busiest':>8s} {'pg CPU/req':>11s}   (medians over rounds; busiest: the"
        f" busiest server process's part of the server's CPU)"
    )
    for name in names:
        loads = [r[name] for r in rounds]
        print(
            f"{name:{width}s} {median([x.rps for x in loads]):8.0f} {median([x.p50_ms for x in loads]):8.2f}"
            f" {median([x.p99_ms for x in loads]):8.2f} {median([x.tail for x in loads]):8.1f}"
            f" {sum(x.errors for x in loads):7d} {median([x.server_cpu_ms for x in loads]):9.2f} ms"
            f" {median([x.busiest_share for x in loads]):8.0%} {median([x.postgres_cpu_ms for x in loads]):8.2f} ms"
        )
    print()
    summary: dict[str, dict[str, float]] = {}
    for name in names[1:]:
        throughput = [r["ours"].rps / r[name].rps for r in rounds]
        p99 = [r["ours"].p99_ms / r[name].p99_ms for r in rounds]
        cpu = [r["ours"].server_cpu_ms / r[name].server_cpu_ms for r in rounds]
        summary[name] = {"throughput": median(throughput), "p99": median(p99), "server_cpu": median(cpu)}
        print(
            f"ours/{name:{width}s} throughput ×{median(throughput):.2f} ({_rounds(throughput)})"
            f"   p99 ×{median(p99):.2f} ({_rounds(p99)})   server CPU per request ×{median(cpu):.2f} ({_rounds(cpu)})"
        )
    if "raw" in names:
        print(f"ours reaches {summary['raw']['throughput']:.0%} of the raw ASGI + asyncpg ceiling's throughput")
    fixed: dict[str, openloop.OpenLoad] = {}
    if args.open_loop > 0:
        reference = "fastapi" if "fastapi" in names else names[-1]
        rate = args.open_loop * median([r[reference].rps for r in rounds])
        print(f"\nopen loop at {rate:.0f} req/s offered ({args.open_loop:.0%} of {reference}'s median above), "
              f"latency from each request's due time:")  # fmt: skip
        for name in names:
            fixed[name] = load = measure_open(prepared[name], args, rate)
            print(f"  {name:{width}s} achieved {load.achieved_rps:6.0f} req/s  p50 {load.p50_ms:8.2f} ms"
                  f"  p99 {load.p99_ms:8.2f} ms  max {load.max_ms:8.2f} ms  errors {load.errors}"
                  + (f"  first: {load.first_bad}" if load.errors else ""))  # fmt: skip
            failed = failed or load.errors > 0
        for name in names[1:]:
            summary[name]["p99_open_loop"] = fixed["ours"].p99_ms / fixed[name].p99_ms
            print(f"ours/{name:{width}s} p99 at the fixed rate ×{summary[name]['p99_open_loop']:.2f}")
    path = save(
        "compare",
        {
            "args": vars(args),
            "rounds": [{name: vars(load) | {"rps": load.rps} for name, load in r.items()} for r in rounds],
            "median_ratios_ours_over": summary,
            "open_loop": {name: vars(load) for name, load in fixed.items()},
        },
    )
    log(f"saved {path.relative_to(path.parents[2])}")
    if failed:
        print("FAILED: some runs had errors")
        return 1
    return 0


def _rounds(ratios: list[float]) -> str:
    return "rounds: " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
