"""What verifying the bearer token costs per request: HS256 (the shared secret) against EdDSA and RS256
(Better Auth's JWT plugin, key cached from its JWKS), beside a request with no auth work at all.

Measured twice: through a running `todo-api serve` (one worker, keep-alive load from asyncio; the
server's own CPU time per request, read from /proc) and in-process (`handlers.auth.verify_token`
alone). About 20 s. Uses DATABASE_URL when set, else a throwaway embedded PostgreSQL; serves its
own JWKS on a loopback port.

    .venv/bin/python bench/auth_verification.py [--seconds 1.25] [--rounds 2] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "0123456789abcdef" * 3
JWKS_PATH = "/api/auth/jwks"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    label: str
    path: str
    token: str | None
    status: int  # what every response must be, or the numbers mean nothing


class Jwks:
    """Better Auth's JWKS endpoint for one Ed25519 and one RSA-2048 key (its default sizes)."""

    def __init__(self) -> None:
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys = [
            {**jwt.algorithms.OKPAlgorithm.to_jwk(self.ed.public_key(), as_dict=True), "kid": "ed", "alg": "EdDSA"},
            {**jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": "rsa", "alg": "RS256"},
        ]
        body = json.dumps({"keys": keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == JWKS_PATH else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tokens(self) -> dict[str, str]:
        """One long-lived token per algorithm, shaped like Better Auth's."""
        now = int(time.time())
        claims = {"sub": f"bench-{uuid.uuid4().hex[:8]}", "iat": now, "exp": now + 3600}
        better_auth = {**claims, "iss": self.url, "aud": self.url, "email": "bench@example.com", "name": "Bench"}
        return {
            "HS256": jwt.encode(claims, SECRET, algorithm="HS256"),
            "EdDSA": jwt.encode(better_auth, self.ed, algorithm="EdDSA", headers={"kid": "ed"}),
            "RS256": jwt.encode(better_auth, self.rsa, algorithm="RS256", headers={"kid": "rsa"}),
        }


def database_url() -> str:
    from persistence import schema
    from todo_api import embedded

    url = os.environ.get("DATABASE_URL") or embedded.start(
        Path(tempfile.mkdtemp(prefix="todo-api-bench-")) / "pgdata", throwaway=True
    )
    schema.migrate(url)
    return url


def start_service(database: str, jwks: Jwks) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "BETTER_AUTH_", "CORS_"))}
    env.update(DATABASE_URL=database, BETTER_AUTH_SECRET=SECRET, BETTER_AUTH_URL=jwks.url, LOG_LEVEL="WARNING")
    command = [sys.executable, "-m", "todo_api.cli", "serve", "--no-migrate", "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("todo-api serve did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (a single uvicorn worker serves in the process itself)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def load(port: int, scenario: Scenario, seconds: float, connections: int) -> list[float]:
    """Latencies of back-to-back keep-alive requests on `connections` sockets for `seconds`."""
    auth = f"Authorization: Bearer {scenario.token}\r\n" if scenario.token else ""
    request = f"GET {scenario.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    expected = f" {scenario.status} ".encode()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (started := time.perf_counter()) < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if expected not in head.split(b"\r\n", 1)[0]:
                    raise SystemExit(f"{scenario.label}: expected {scenario.status}, got {head[:40]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies


def through_the_service(
    base_url: str, pid: int, scenarios: list[Scenario], *, seconds: float, connections: int, rounds: int
) -> list[dict[str, float]]:
    """Per scenario, its least disturbed round (lowest server CPU per request): other processes on
    the machine only ever add to a measurement, so the minimum is the closest to the true cost."""
    port = int(base_url.rsplit(":", 1)[1])
    best: list[dict[str, float]] = [{"cpu_us": float("inf")} for _ in scenarios]
    for _ in range(rounds):  # interleaved, so that a burst of background load hits every scenario alike
        for index, scenario in enumerate(scenarios):
            asyncio.run(load(port, scenario, 0.25, connections))  # warm: JWKS fetched, code paths hot
            cpu = cpu_seconds(pid)
            started = time.perf_counter()
            latencies = asyncio.run(load(port, scenario, seconds, connections))
            elapsed = time.perf_counter() - started
            row = {
                "rps": len(latencies) / elapsed,
                "p50_ms": statistics.median(latencies) * 1000,
                "cpu_us": (cpu_seconds(pid) - cpu) / len(latencies) * 1e6,
            }
            best[index] = min(best[index], row, key=lambda r: r["cpu_us"])
    return best


def in_process(jwks: Jwks, tokens: dict[str, str], seconds: float) -> dict[str, float]:
    """Microseconds per `verify_token` call, the key already cached."""
    from handlers import auth
    from todo_api.settings import load as load_settings

    auth.configure(load_settings({"BETTER_AUTH_SECRET": SECRET, "BETTER_AUTH_URL": jwks.url}))
    request: Any = SimpleNamespace(path_params={})

    async def measure(token: str) -> float:
        await auth.verify_token(token, request)  # fetches the JWKS once
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(100):
                await auth.verify_token(token, request)
            calls += 100
        return elapsed / calls * 1e6

    return {alg: asyncio.run(measure(token)) for alg, token in tokens.items()}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = zip(cells, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(cell.rjust(width) for cell, width in rest)])

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.25, help="seconds per scenario and round (default 1.25)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all scenarios (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    args = parser.parse_args(argv)

    jwks = Jwks()
    tokens = jwks.tokens()
    # /api/tasks/0 is out of the contract's range: a 404 decided after the token is verified and
    # before any SQL, so the only difference between these rows is the verification.
    scenarios = [
        Scenario("GET /health, no auth", "/health", None, 200),
        Scenario("GET /api/tasks/0, no token", "/api/tasks/0", None, 401),
        *(Scenario(f"GET /api/tasks/0, {alg}", "/api/tasks/0", token, 404) for alg, token in tokens.items()),
        Scenario("GET /api/tasks?limit=1, HS256 (+1 query)", "/api/tasks?limit=1", tokens["HS256"], 200),
    ]
    process, base_url = start_service(database_url(), jwks)
    try:
        rows = through_the_service(
            base_url, process.pid, scenarios, seconds=args.seconds, connections=args.connections, rounds=args.rounds
        )
    finally:
        process.terminate()
        process.wait(10)
    decode = in_process(jwks, tokens, seconds=0.5)
    jwks.server.shutdown()

    health = rows[0]["cpu_us"]
    print(
        f"\nThrough the service: 1 worker, {args.connections} keep-alive connections, "
        f"best of {args.rounds} rounds of {args.seconds:g} s"
    )
    print(
        table(
            ["request", "req/s", "p50 ms", "server CPU µs/req", "× /health"],
            [
                [s.label, f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['cpu_us']:.0f}", f"{r['cpu_us'] / health:.2f}"]
                for s, r in zip(scenarios, rows, strict=True)
            ],
        )
    )
    print("\nIn process: handlers.auth.verify_token, key cached")
    print(
        table(
            ["token", "µs/verify", "× HS256", "÷ a /health request"],
            [[alg, f"{us:.1f}", f"{us / decode['HS256']:.1f}", f"{us / health:.2f}"] for alg, us in decode.items()],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
