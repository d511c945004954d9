"""`python -m bench [COMMAND] …` (or `bench/run …`): see bench/README.md."""

from __future__ import annotations

import argparse
import shutil
import sys

from bench import workload

COMMANDS = ("run", "compare", "listing", "coldstart", "profile", "roundtrips", "cpucost", "clean")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the workload against one target: req/s, p50, p99, errors")
    run.add_argument(
        "target", nargs="?", default="ours", help="ours (default), fastapi, raw, raw-psycopg or ours+PATCH…"
    )
    workload.add_arguments(run, duration=15, warmup=5)

    compare = commands.add_parser("compare", help="ours and baselines alternately, median ratios over rounds")
    compare.add_argument(
        "--against",
        default="fastapi,raw",
        help="comma-separated baselines (default fastapi,raw; also raw-psycopg, ours+PATCH…)",
    )
    compare.add_argument("--rounds", type=int, default=3, help="rounds, each target once per round (default 3)")
    workload.add_arguments(compare, duration=15, warmup=5)

    listing = commands.add_parser("listing", help="list latency for one user at 1 000 vs 100 000 tasks")
    listing.add_argument("--rounds", type=int, default=3)
    listing.add_argument("--duration", type=float, default=3, help="seconds per query and size per round (default 3)")
    listing.add_argument("--sizes", default="1000,100000")

    coldstart = commands.add_parser("coldstart", help="exec to first 200 on /health, median of N")
    coldstart.add_argument("--runs", type=int, default=5)
    coldstart.add_argument("--workers", type=int, default=2)
    coldstart.add_argument("--baselines", action="store_true", help="also time the baselines' start")

    profile = commands.add_parser("profile", help="py-spy on ours under the workload; writes a text summary")
    profile.add_argument("--duration", type=float, default=20)
    profile.add_argument("--warmup", type=float, default=5)
    profile.add_argument("--workers", type=int, default=2)
    profile.add_argument("--connections", type=int, default=100)
    profile.add_argument("--threads", type=int, default=2)
    profile.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    profile.add_argument("--svg", action="store_true", help="also record a flame graph (bench/results/profile.svg)")
    profile.add_argument("--only", choices=["py-spy", "cpu"], help="run only one of the two profilers")

    roundtrips = commands.add_parser(
        "roundtrips", help="PostgreSQL round trips per request of ours, from a libpq trace"
    )
    roundtrips.add_argument("--patches", default="", help="PATCH[+PATCH…] to apply first (see bench/experiments.py)")

    cpucost = commands.add_parser("cpucost", help="in-process CPU per request of ours vs ours+patches, A B A B")
    cpucost.add_argument(
        "--patches",
        default="nopreping,utc,nopreping+utc",
        help="comma-separated variants, each PATCH[+PATCH…] (see bench/experiments.py)",
    )
    cpucost.add_argument("--requests", type=int, default=1000, help="requests of the mix per run (default 1000)")
    cpucost.add_argument("--rounds", type=int, default=5)
    cpucost.add_argument(
        "--only",
        default="",
        choices=["", "list", "get", "create", "complete", "update"],
        help="one operation instead of the mix",
    )

    commands.add_parser("clean", help="drop every bench_* database")

    args = parser.parse_args(argv)
    if args.command == "clean":
        from bench.harness import drop_databases

        print("dropped: " + (", ".join(drop_databases()) or "nothing"))
        return 0
    if args.command in ("run", "compare", "listing", "profile") and shutil.which("wrk") is None:
        parser.error("wrk is not installed: apt-get update && apt-get install -y wrk")
    if args.command == "run":
        return workload.run(args)
    if args.command == "compare":
        return workload.compare(args)
    if args.command == "listing":
        from bench import listing as module
    elif args.command == "coldstart":
        from bench import coldstart as module
    elif args.command == "profile":
        from bench import profile as module
    elif args.command == "cpucost":
        from bench import cpucost as module
    else:
        from bench import roundtrips as module
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
