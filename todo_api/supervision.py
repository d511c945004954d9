"""Worker processes end with the `todo-api serve` master that started them.

Uvicorn's workers keep serving on the shared socket when the master is killed (SIGKILL, OOM
killer), and nothing would ever stop them. On Linux the kernel sends them SIGTERM instead, which
they answer as usual: finish in-flight requests, then exit.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def end_with_master() -> None:
    """In a worker process: receive SIGTERM when the master dies. Elsewhere: nothing."""
    master = multiprocessing.parent_process()
    if master is None or sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != master.pid:  # the master died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
