"""Clients for the rate-limit measurement, each run in a process of its own so that neither takes
the other's CPU in one interpreter:

    python -m tests.support.traffic flood BASE_URL TOKEN CONNECTIONS SECONDS   # lists, as fast as it is answered
    python -m tests.support.traffic victim BASE_URL TOKEN SECONDS              # a list every 50 ms, timed

Each prints one JSON object: the statuses it got, and the victim its latencies in seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx

VICTIM_INTERVAL = 0.05


async def flood(base_url: str, token: str, connections: int, seconds: float) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as http:

        async def one_connection() -> None:
            while time.monotonic() < until:
                statuses[(await http.get("/api/tasks")).status_code] += 1

        await asyncio.gather(*(one_connection() for _ in range(connections)))
    return {"statuses": {str(status): count for status, count in statuses.items()}}


def victim(base_url: str, token: str, seconds: float) -> dict[str, object]:
    """A frontend's pace, below its rate limit: a list every VICTIM_INTERVAL seconds."""
    latencies, statuses = [], Counter[int]()
    start = time.monotonic()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        for n in range(int(seconds / VICTIM_INTERVAL)):
            time.sleep(max(0.0, start + n * VICTIM_INTERVAL - time.monotonic()))  # the pace, not a wait for a condition
            started = time.perf_counter()
            status = http.get("/api/tasks").status_code
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
    return {"statuses": {str(status): count for status, count in statuses.items()}, "latencies": latencies}


def main(argv: list[str]) -> None:
    role, base_url, token, *rest = argv
    if role == "flood":
        result = asyncio.run(flood(base_url, token, int(rest[0]), float(rest[1])))
    else:
        result = victim(base_url, token, float(rest[0]))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
