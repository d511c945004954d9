"""`todo-api serve --workers 1` (one process) with an on-CPU sampling profiler inside (run under the
service's venv by `bench/run profile`).

SIGPROF fires per millisecond of this process's CPU time (ITIMER_PROF), so, unlike an outside
sampler on a busy machine, time spent waiting for the CPU or for PostgreSQL is never sampled.
A sample lands on the Python frame that runs when the signal is handled: time in C code called
from Python (orjson, libpq, jwt's HMAC) is charged to its caller, while the event loop's own C
time is charged to the next callback it runs (uvicorn's protocol, a task step).
SIGUSR1 starts sampling; SIGUSR2 writes the collapsed stacks, weighted in µs of CPU, to
$BENCH_PROFILE_OUT.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from types import FrameType

INTERVAL = 0.001
_samples: collections.Counter[str] = collections.Counter()
_last = 0.0


def _sample(_signum: int, frame: FrameType | None) -> None:
    # Python runs the handler at its next bytecode, so ticks that fell in one long stretch of C
    # code arrive as one call: weigh each sample by the CPU time since the previous one (µs).
    global _last
    now = time.process_time()
    weight, _last = round((now - _last) * 1e6), now
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    _samples[";".join(reversed(names))] += weight


def _start(_signum: int, _frame: FrameType | None) -> None:
    global _last
    _samples.clear()
    _last = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)


def _stop(_signum: int, _frame: FrameType | None) -> None:
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    with open(os.environ["BENCH_PROFILE_OUT"], "w") as out:
        for stack, count in _samples.items():
            out.write(f"{stack} {count}\n")


def main() -> None:
    """`todo-api serve --workers 1`, which serves in this very process."""
    from todo_api import cli

    signal.signal(signal.SIGPROF, _sample)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.exit(cli.main(["serve", "--no-migrate", "--port", sys.argv[1], "--workers", "1"]))


if __name__ == "__main__":
    main()
