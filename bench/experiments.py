"""Ours with candidate optimisations patched in at start, to measure a recommendation before
anyone edits the app: target `ours+PATCH[+PATCH…]` in `bench/run run|compare`.

Patches (each mimics a change weighed in bench/PROFILE.md, nothing more; the ones the app has
since adopted — the one-round-trip statements, the token cache, the validators built once — are
gone, and so is rendering the list in PostgreSQL, which saved too little to keep):
  nopreping  — no `pool_pre_ping` (one round trip less per request)
  utc        — no per-datetime `astimezone`: the session's TimeZone is UTC already
  norls      — no switch to the least-privilege role, so a superuser login bypasses row-level
               security: what the database's second line of isolation costs

Run under the service's venv as `python -m bench.experiments PORT WORKERS` with BENCH_PATCHES set:
it is `todo-api serve` with the workers' app factory wrapped.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PATCHES = ("nopreping", "utc", "norls")


def apply(patches: list[str]) -> None:
    unknown = set(patches) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown patches {sorted(unknown)}; choose from {PATCHES}")
    if "nopreping" in patches:
        from persistence import database

        create_async_engine = database.create_async_engine

        def without_pre_ping(url: str, **kwargs: Any) -> Any:
            return create_async_engine(url, **{**kwargs, "pool_pre_ping": False})

        database.create_async_engine = without_pre_ping
    if "norls" in patches:
        from persistence import database

        database._IN_APP_ROLE = ""
    if "utc" in patches:
        from handlers import tasks

        tasks._utc = lambda moment: moment


def create_app() -> Any:
    apply([patch for patch in os.environ.get("BENCH_PATCHES", "").split("+") if patch])
    from todo_api.app import create_app as create

    return create()


def main() -> None:
    """`todo-api serve` exactly, with the workers' app factory swapped for create_app above."""
    import uvicorn

    from todo_api import cli

    run = uvicorn.run

    def run_patched(app: Any, **kwargs: Any) -> None:
        assert app == "todo_api.app:create_app", app
        run("bench.experiments:create_app", **kwargs)

    uvicorn.run = run_patched
    sys.exit(cli.main(["serve", "--port", sys.argv[1], "--workers", sys.argv[2]]))


if __name__ == "__main__":
    main()
