"""Capacity model inputs: server CPU per request of the API process and of PostgreSQL, and the
connections one API process holds, under a fixed number of requests of the bench mix.

CPU is read from /proc/<pid>/stat (utime + stime of every process of each side, plus what
PostgreSQL's reaped backends used), before and after, so the client's own CPU never counts and
waiting for a core does not either. The database is an embedded throwaway PostgreSQL unless
--database-url names a server on this machine (its whole postmaster is counted: keep it idle).

    .venv/bin/python -m bench.capacity [--requests 4000] [--clients 16] [--database-url URL]
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import jwt
import psycopg

from bench import harness
from persistence import schema
from todo_api import embedded

ROOT = Path(__file__).resolve().parent.parent
SECRET = "capacity-Vw3Tq9Lm2Xp7Rk5Nz8Bc4Hf6Jd1Gs0Ye"


def cpu_seconds(root: int) -> float:
    """CPU time of `root` and its live descendants, plus its reaped children's."""
    live = sum(harness.cpu_seconds(harness.descendants(root)).values())
    try:
        fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return live
    return live + (int(fields[13]) + int(fields[14])) / harness.CLOCK_TICKS


def postmaster(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    status = Path(f"/proc/{row[0]}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def server_connections(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else 0


def drive(base_url: str, requests: int, clients: int) -> int:
    """Send `requests` of the bench mix (50 % list, 20 % get, 15 % create, 10 % complete, 5 %
    update) from `clients` threads, each its own user; the number answered 2xx."""
    budget = iter(range(requests))
    lock = threading.Lock()
    ok = [0]

    def client() -> None:
        user = f"cap-{uuid.uuid4().hex[:10]}"
        now = int(time.time())
        token = jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")
        pick = random.Random(user)
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            ids = [http.post("/api/tasks", json={"title": f"seed {n}"}).json()["id"] for n in range(20)]
            while True:
                with lock:
                    if next(budget, None) is None:
                        return
                roll, task = pick.random(), pick.choice(ids)
                if roll < 0.50:
                    response = http.get("/api/tasks", params={"limit": 50})
                elif roll < 0.70:
                    response = http.get(f"/api/tasks/{task}")
                elif roll < 0.85:
                    response = http.post("/api/tasks", json={"title": "capacity"})
                elif roll < 0.95:
                    response = http.patch(f"/api/tasks/{task}/complete", json={"completed": pick.random() < 0.5})
                else:
                    response = http.patch(f"/api/tasks/{task}", json={"title": f"renamed {pick.random()}"})
                if response.is_success:
                    with lock:
                        ok[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok[0]


def measure(url: str, requests: int, clients: int) -> None:
    schema.migrate(url)
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
    serve = [sys.executable, "-m", "todo_api.cli", "serve", "--no-migrate", "--workers", "1", "--port", str(port)]
    api = subprocess.Popen(serve, env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base_url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit("the service did not become ready")
            time.sleep(0.1)
        drive(base_url, requests // 10, clients)  # warm up: pools filled, code paths hot
        database = postmaster(url)
        api_before, db_before = cpu_seconds(api.pid), cpu_seconds(database)
        started = time.monotonic()
        answered = drive(base_url, requests, clients)
        elapsed = time.monotonic() - started
        api_cpu, db_cpu = cpu_seconds(api.pid) - api_before, cpu_seconds(database) - db_before
        connections = server_connections(url)
    finally:
        api.terminate()
        api.wait(15)
    print(
        f"requests={requests} answered_2xx={answered} clients={clients} elapsed={elapsed:.1f}s "
        f"throughput={requests / elapsed:.0f}/s\n"
        f"api_cpu_per_request={api_cpu / requests * 1000:.3f}ms "
        f"postgres_cpu_per_request={db_cpu / requests * 1000:.3f}ms "
        f"api_cores_per_postgres_core={api_cpu / db_cpu:.1f}\n"
        f"server_connections_of_one_api_process={connections}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--database-url", help="a PostgreSQL on this machine (default: embedded, throwaway)")
    args = parser.parse_args()
    url = args.database_url
    if not url:
        folder = tempfile.mkdtemp(prefix="todo-api-capacity-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # after the server's own cleanup
        url = embedded.start(Path(folder) / "pgdata", throwaway=True)
    measure(url, args.requests, args.clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
