"""PostgreSQL round trips per request of ours, counted from libpq's own protocol trace.

`bench/run roundtrips` seeds bench_ours, then runs this module again under the service's venv
(it imports todo_api), drives each of the workload's operations in-process through httpx's
ASGI transport, and prints every message the service sent to PostgreSQL for each request.
A round trip is one `Query` (simple protocol) or one `Sync` (extended protocol) from the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(args: argparse.Namespace) -> int:
    from bench.harness import APP_PYTHON, ROOT, TARGETS, prepare, task_ids, token

    target = TARGETS["ours"]
    prepared = prepare(target)
    user = "u000"
    env = {**target.env(), "BENCH_TOKEN": token(user), "BENCH_TASK_ID": str(task_ids(target)[user][0]),
           "BENCH_PATCHES": args.patches}  # fmt: skip
    finished = subprocess.run(
        [APP_PYTHON, "-m", "bench.roundtrips", "--inner"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if finished.returncode != 0:
        print(finished.stdout + finished.stderr)
        return 1
    del prepared
    print(finished.stdout, end="")
    return 0


OPERATIONS = [
    ("list", "GET", "/api/tasks?limit=50", None),
    ("get", "GET", "/api/tasks/{id}", None),
    ("create", "POST", "/api/tasks", b'{"title": "Round trips", "priority": "high", "tags": ["bench"]}'),
    ("complete (toggle)", "PATCH", "/api/tasks/{id}/complete", b""),
    ("update (title)", "PATCH", "/api/tasks/{id}", b'{"title": "Renamed"}'),
]


async def _inner() -> None:
    import httpx
    from psycopg import pq
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from bench.experiments import apply

    apply([patch for patch in os.environ.get("BENCH_PATCHES", "").split("+") if patch])
    from persistence import database
    from todo_api.app import create_app
    from todo_api.settings import load

    settings = load()
    app = create_app(settings)
    await database.open_pool(settings.database_url or "", pool_size=1)
    trace = tempfile.NamedTemporaryFile("w+", suffix=".trace", delete=False)  # noqa: SIM115
    traced = Path(trace.name)

    def sent_since(offset: int) -> list[list[str]]:
        lines = traced.read_text()[offset:].splitlines()
        return [fields for fields in (line.split("\t") for line in lines) if fields[0] == "F"]

    @event.listens_for(Engine, "connect")
    def _trace(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        pgconn = dbapi_connection.driver_connection.pgconn
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    headers = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"], "Content-Type": "application/json"}
    task_id = os.environ["BENCH_TASK_ID"]
    results = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for warm in (True, False):  # the first pass opens the connection and decides the RLS statement
            for name, method, path, body in OPERATIONS:
                offset = os.fstat(trace.fileno()).st_size
                response = await client.request(method, path.format(id=task_id), content=body, headers=headers)
                await asyncio.sleep(0.05)  # let the pool's checkin (a rollback or reset) reach the trace
                sent = sent_since(offset)
                if warm:
                    continue
                statements = [
                    fields[3].strip()[:160] for fields in sent if fields[2] == "Query" or fields[2] == "Parse"
                ]
                round_trips = sum(1 for fields in sent if fields[2] in ("Query", "Sync"))
                results.append({"operation": name, "status": response.status_code, "round_trips": round_trips,
                                "statements": statements})  # fmt: skip
    await database.close_pool()
    os.unlink(trace.name)
    for result in results:
        print(f"{result['operation']:20s} HTTP {result['status']}  {result['round_trips']} round trips")
        for statement in result["statements"]:
            print(f"    {statement}")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    if "--inner" in sys.argv:
        asyncio.run(_inner())
