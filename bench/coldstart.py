"""`todo-api serve` cold start: from exec to the first 200 on /health, median of N, with
`--no-migrate` alongside (the variants alternate) and a breakdown of where the time goes."""

from __future__ import annotations

import argparse
import subprocess
import time

from bench.harness import APP_PYTHON, ROOT, TARGETS, TODO_API, Server, median, prepare, save

BREAKDOWN = """
import time
started = time.perf_counter()
import todo_api.app
imported = time.perf_counter()
from todo_api.app import create_app
create_app()
built = time.perf_counter()
print(imported - started, built - imported)
"""


def main(args: argparse.Namespace) -> int:
    ours = TARGETS["ours"]
    prepare(ours)
    variants = {
        "todo-api serve (migrations at head)": dict(target=ours, migrate=True),
        "todo-api serve --no-migrate": dict(target=ours, migrate=False),
    }
    if args.baselines:
        for name in ("fastapi", "raw"):
            prepare(TARGETS[name])
            variants[f"{name} baseline (uvicorn)"] = dict(target=TARGETS[name], migrate=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, variant in variants.items():
            server = Server(variant["target"], workers=args.workers, migrate=variant["migrate"])
            try:
                times[name].append(server.start())
            finally:
                server.stop()

    print(f"cold start, exec → first 200 on /health, --workers {args.workers}, {args.runs} runs each:")
    for name, seconds in times.items():
        print(f"  {name:40s} median {median(seconds):5.2f} s   (min {min(seconds):.2f}, max {max(seconds):.2f})")

    # Where it goes: interpreter, imports, app factory (per worker), migration check.
    env = ours.env()
    interpreter, imports, factory, migrate = [], [], [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([APP_PYTHON, "-c", "pass"], check=True)
        interpreter.append(time.perf_counter() - started)
        out = subprocess.run(
            [APP_PYTHON, "-c", BREAKDOWN], env=env, cwd=ROOT, check=True, capture_output=True, text=True
        )
        first, second = map(float, out.stdout.split())
        imports.append(first)
        factory.append(second)
        started = time.perf_counter()
        subprocess.run([TODO_API, "migrate"], env=env, check=True, capture_output=True)
        migrate.append(time.perf_counter() - started)
    print("breakdown (medians):")
    print(f"  python interpreter start                  {median(interpreter):5.2f} s")
    print(f"  import todo_api.app                       {median(imports):5.2f} s   (in each worker)")
    print(f"  create_app() (contract, validators)       {median(factory):5.2f} s   (in each worker)")
    print(f"  `todo-api migrate` at head, whole process {median(migrate):5.2f} s")
    importtime = subprocess.run(
        [APP_PYTHON, "-X", "importtime", "-c", "import todo_api.app"], env=env, cwd=ROOT, capture_output=True, text=True
    ).stderr
    packages: dict[str, int] = {}  # cumulative µs of each package's first (outermost) import
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            root = parts[2].strip().split(".")[0]
            if root not in ("todo_api", "handlers", "persistence"):
                packages[root] = max(packages.get(root, 0), int(parts[1]))
    slowest = sorted(packages.items(), key=lambda item: -item[1])[:10]
    print(
        "  slowest imports (cumulative, nested ones overlap): " + ", ".join(f"{n} {us / 1e6:.2f}s" for n, us in slowest)
    )
    save("coldstart", {"args": vars(args), "times": times, "breakdown": {
        "interpreter": interpreter, "import": imports, "create_app": factory, "migrate": migrate}})  # fmt: skip
    return 0
