"""The workload's mix at a fixed offered rate (open loop), the way users arrive: request i is due
at start + i / rate whether or not earlier ones were answered, and its latency counts from that
due time, so a server that stalls is charged for every request that queued behind the stall
(wrk, closed-loop, would simply send fewer; Debian has no wrk2). Keep-alive connections from a
pool; a request waits for a free one, and that wait counts too.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass

import uvloop

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
PRIORITIES = ("low", "medium", "high", "urgent")


@dataclass
class OpenLoad:
    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    first_bad: str


def run(
    port: int,
    users: dict[str, tuple[str, list[int]]],
    *,
    rate: float,
    duration: float,
    samples: list[tuple[float, float, bool]] | None = None,
) -> OpenLoad:
    """`users`: user id → (token, task ids). Runs `rate × duration` requests of workload.lua's mix;
    `samples` gets each request's (due time as time.time(), latency in seconds, whether it writes)."""
    return uvloop.run(_run(port, list(users.values()), rate, duration, samples))


def _request(number: int, rng: random.Random, users: list[tuple[str, list[int]]]) -> bytes:
    token, ids = rng.choice(users)
    roll, task_id = rng.randint(1, 100), rng.choice(ids)
    if roll <= 50:
        method, path, body = "GET", "/api/tasks?limit=50", None
    elif roll <= 70:
        method, path, body = "GET", f"/api/tasks/{task_id}", None
    elif roll <= 85:
        method, path = "POST", "/api/tasks"
        body = (f'{{"title":"Open-loop task {number}","description":"Created under load",'
                f'"priority":"{PRIORITIES[number % 4]}","tags":["bench","t{number % 7}"]}}')  # fmt: skip
    elif roll <= 95:
        method, path, body = "PATCH", f"/api/tasks/{task_id}/complete", ""
    else:
        method, path, body = "PATCH", f"/api/tasks/{task_id}", f'{{"title":"Renamed {number}"}}'
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n"
    return (head + "\r\n" + (body or "")).encode()


async def _run(
    port: int,
    users: list[tuple[str, list[int]]],
    rate: float,
    duration: float,
    samples: list[tuple[float, float, bool]] | None,
) -> OpenLoad:
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
    for _ in range(100):
        free.put_nowait(None)  # connected on first use
    latencies: list[float] = []
    bad: list[str] = []

    async def one(request: bytes, due: float) -> None:
        connection = await free.get()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = connection
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = CONTENT_LENGTH.search(head)
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            if not head.startswith(b"HTTP/1.1 2"):
                bad.append(head.split(b"\r\n", 1)[0].decode() + " " + body[:200].decode(errors="replace"))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            bad.append(repr(error))
            connection = None
        latencies.append(loop.time() - due)
        if samples is not None:
            samples.append((wall_start + due - start, latencies[-1], not request.startswith(b"GET ")))
        free.put_nowait(connection)

    total = int(rate * duration)
    requests = [_request(number, rng, users) for number in range(total)]
    pending: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.05
    wall_start = time.time() + start - loop.time()
    for number, request in enumerate(requests):
        due = start + number / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(request, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = loop.time() - start
    for _, writer in [c for c in (free.get_nowait() for _ in range(free.qsize())) if c is not None]:
        writer.close()
    latencies.sort()
    return OpenLoad(
        offered_rps=rate,
        achieved_rps=total / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        max_ms=latencies[-1] * 1000,
        errors=len(bad),
        first_bad=bad[0] if bad else "",
    )
