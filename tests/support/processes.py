"""The processes tests start (the service, PgBouncer, Better Auth): a port for them, their log,
waiting until they answer, and stopping them for good."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from tests.support import TLS

Answer = TypeVar("Answer")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoggedProcess:
    """`command` running with its stdout and stderr in a temporary log file, deleted when it is stopped."""

    running: ClassVar[set[LoggedProcess]] = set()  # not stopped yet: their logs go into a failed test's report

    def __init__(self, command: list[str], *, log_prefix: str, **options: Any) -> None:
        log_fd, self.log_path = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
        self.command = command
        self.process = subprocess.Popen(command, stdout=log_fd, stderr=subprocess.STDOUT, **options)
        os.close(log_fd)
        LoggedProcess.running.add(self)

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        LoggedProcess.running.discard(self)
        stop(self.process)
        Path(self.log_path).unlink(missing_ok=True)


def wait_until_up(
    process: subprocess.Popen[Any], probe: Callable[[], Answer], *, name: str, log: Callable[[], str], timeout: float
) -> Answer:
    """`probe()`'s first truthy answer; a RuntimeError with `log()` if `process` exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not come up: {log()}")
        if answer := probe():
            return answer
        time.sleep(0.05)


def answers(url: str) -> Callable[[], bool]:
    """A probe for `wait_until_up`: GET `url` is a 200 (and not yet while nothing listens)."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2, verify=TLS).status_code == 200
        except httpx.TransportError:
            return False

    return probe


def stop(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate `process`, and kill it if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
