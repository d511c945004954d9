"""List latency for one user at 1 000 vs 100 000 tasks (keyset pagination), side by side.

Seeds the database PREFIX + "list" (bench_list by default) with one user per size (INSERT …
SELECT generate_series), serves it with `todo-api serve`, and measures with wrk on one
connection, sizes alternating within each round: the first page, a page 90 % deep reached
through the `Link` cursors, a common and a rare tag filter, and `sort=priority`.
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request
from urllib.parse import urlsplit

from bench.harness import PREFIX, TARGETS, Server, log, median, recreate_database, save, seed, token, wrk

DATABASE = PREFIX + "list"
QUERIES = [
    ("first page", "/api/tasks?limit=50"),
    ("page 90% deep (Link cursor)", None),
    ("tag=work (20% of tasks)", "/api/tasks?limit=50&tag=work"),
    ("tag=rare (0.1% of tasks)", "/api/tasks?limit=50&tag=rare"),
    ("sort=priority", "/api/tasks?limit=50&sort=priority"),
    ("sort=priority, 2nd page", None),
]


def _next_link(base: str, path: str, auth: str) -> tuple[str | None, int]:
    request = urllib.request.Request(base + path, headers={"Authorization": auth})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        link = response.headers.get("Link")
    rows = body.count(b'"user_id"')
    if not link:
        return None, rows
    url = urlsplit(re.match(r"<([^>]*)>", link)[1])  # type: ignore[index]
    return f"{url.path}?{url.query}", rows


def _deep_path(base: str, auth: str, size: int, depth: float = 0.9) -> str:
    """Follow `Link: rel="next"` (500 a page) until `depth` of the user's tasks lie behind."""
    path, seen = "/api/tasks?limit=500", 0
    while seen + 500 <= size * depth:
        next_path, rows = _next_link(base, path, auth)
        seen += rows
        assert next_path is not None, "the Link chain ended early"
        path = next_path
    return path.replace("limit=500", "limit=50")


def main(args: argparse.Namespace) -> int:
    target = TARGETS["ours"]
    sizes = [int(size) for size in args.sizes.split(",")]
    users = {size: f"list{size}" for size in sizes}
    started = time.monotonic()
    recreate_database(DATABASE)
    target.create_schema(DATABASE)
    for size, user in users.items():
        seed(target, [user], size, database=DATABASE)
    log(f"  {DATABASE}: seeded {', '.join(f'{size} tasks for {user}' for size, user in users.items())} "
        f"in {time.monotonic() - started:.1f}s")  # fmt: skip
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with Server(target, workers=2, database=DATABASE) as server:
        paths: dict[tuple[str, int], str] = {}
        for size, user in users.items():
            auth = "Bearer " + token(user)
            for name, path in QUERIES:
                if name.startswith("page 90%"):
                    path = _deep_path(server.base, auth, size)
                elif name == "sort=priority, 2nd page":
                    path = _next_link(server.base, "/api/tasks?limit=50&sort=priority", auth)[0]
                paths[(name, size)] = path  # type: ignore[assignment]
        for number in range(args.rounds):
            order = sizes if number % 2 == 0 else sizes[::-1]
            for name, _ in QUERIES:
                for size in order:
                    load = wrk(
                        server.base + paths[(name, size)],
                        "fixed.lua",
                        duration=args.duration,
                        connections=1,
                        headers=("Authorization: Bearer " + token(users[size]),),
                    )
                    if load.errors:
                        raise SystemExit(f"{name} at {size}: {load.errors} errors {load.error_detail}")
                    results.setdefault((name, size), []).append((load.p50_ms, load.p99_ms))
            log(f"  round {number + 1} done")

    header = f"{'query (limit=50)':30s}" + "".join(f"{f'{size:,} tasks: p50 / p99 ms':>30s}" for size in sizes)
    print(header + f"{'p50 ratio':>12s}")
    table = []
    for name, _ in QUERIES:
        cells, p50s = [], []
        for size in sizes:
            p50 = median([p for p, _ in results[(name, size)]])
            p99 = median([p for _, p in results[(name, size)]])
            cells.append(f"{p50:17.2f} / {p99:8.2f}")
            p50s.append(p50)
            table.append({"query": name, "size": size, "p50_ms": p50, "p99_ms": p99, "path": paths[(name, size)]})
        print(f"{name:30s}" + "".join(f"{cell:>30s}" for cell in cells) + f"{p50s[-1] / p50s[0]:11.2f}×")
    print(f"(medians of {args.rounds} rounds of {args.duration:g}s each on one connection; sizes alternate)")
    save("listing", {"args": vars(args), "results": table})
    return 0
