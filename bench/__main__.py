"""`python -m bench [COMMAND] …` (or `bench/run …`): see bench/README.md."""

from __future__ import annotations

import argparse
import shutil
import sys

from bench import events, reminders, workload

COMMANDS = ("run", "compare", "listing", "reminders", "profile", "cpucost", "events", "clean")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the workload against one target: req/s, p50, p99, errors")
    run.add_argument("target", nargs="?", default="ours", help="ours (default), fastapi, raw or raw-psycopg")
    workload.add_arguments(run, duration=15, warmup=5)

    compare = commands.add_parser("compare", help="ours and baselines alternately, median ratios over rounds")
    compare.add_argument(
        "--against",
        default="fastapi,raw",
        help="comma-separated baselines (default fastapi,raw; also raw-psycopg)",
    )
    compare.add_argument("--rounds", type=int, default=3, help="rounds, each target once per round (default 3)")
    compare.add_argument(
        "--open-loop",
        type=float,
        default=0.6,
        help="then each target at this fraction of fastapi's req/s, open loop (default 0.6; 0: skip)",
    )
    workload.add_arguments(compare, duration=15, warmup=5)

    listing = commands.add_parser("listing", help="list latency for one user at 1 000 vs 100 000 tasks")
    listing.add_argument("--rounds", type=int, default=3)
    listing.add_argument("--duration", type=float, default=3, help="seconds per query and size per round (default 3)")
    listing.add_argument("--sizes", default="1000,100000")

    reminders.add_arguments(
        commands.add_parser("reminders", help="50 000 reminders due at once: delivery lag, order, request p99 beside")
    )

    profile = commands.add_parser("profile", help="py-spy on ours under the workload; writes a text summary")
    profile.add_argument("--duration", type=float, default=20)
    profile.add_argument("--warmup", type=float, default=5)
    profile.add_argument("--workers", type=int, default=2)
    profile.add_argument("--connections", type=int, default=100)
    profile.add_argument("--threads", type=int, default=2)
    profile.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    profile.add_argument("--svg", action="store_true", help="also record a flame graph (bench/results/profile.svg)")
    profile.add_argument("--only", choices=["py-spy", "cpu"], help="run only one of the two profilers")

    cpucost = commands.add_parser("cpucost", help="in-process cost per request, upstream vs CPU levers, A B A B")
    cpucost.add_argument(
        "--levers",
        default="connexion-once,gc-freeze,connexion-once+gc-freeze",
        help="comma-separated variants, each LEVER[+LEVER…] (see bench/cpucost.py)",
    )
    cpucost.add_argument("--count", choices=["instructions", "cpu"], default="instructions",
                         help="callgrind's instruction count (default; needs valgrind) or CPU time")  # fmt: skip
    cpucost.add_argument("--requests", type=int, default=500, help="measured requests of the mix per run (default 500)")
    cpucost.add_argument("--rounds", type=int, default=2)
    cpucost.add_argument(
        "--only",
        default="",
        choices=["", "list", "get", "create", "complete", "update"],
        help="one operation instead of the mix",
    )

    events.add_arguments(
        commands.add_parser(
            "events", help="live sync: event latency, memory per stream, streams per worker, idle streams' cost"
        )
    )

    commands.add_parser("clean", help="drop every bench_* database")

    args = parser.parse_args(argv)
    if args.command == "clean":
        from bench.harness import drop_databases

        print("dropped: " + (", ".join(drop_databases()) or "nothing"))
        return 0
    if args.command in ("run", "compare", "listing", "profile", "events") and shutil.which("wrk") is None:
        parser.error("wrk is not installed: apt-get update && apt-get install -y wrk")
    if args.command == "cpucost" and args.count == "instructions" and shutil.which("callgrind_control") is None:
        parser.error("valgrind is not installed: apt-get install -y valgrind (or --count cpu)")
    if args.command == "run":
        return workload.run(args)
    if args.command == "compare":
        return workload.compare(args)
    if args.command == "events":
        return events.main(args)
    if args.command == "reminders":
        return reminders.main(args)
    if args.command == "listing":
        from bench import listing as module
    elif args.command == "profile":
        from bench import profile as module
    else:
        from bench import cpucost as module
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
