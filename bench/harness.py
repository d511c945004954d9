"""What every benchmark here shares: the targets, their databases and seed data, starting and
stopping servers, CPU accounting from /proc, and running wrk."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# Every database a benchmark creates starts with this: two checkouts benchmarking on one
# PostgreSQL at once must not recreate each other's databases mid-run.
PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench_")
SECRET = os.environ.get("BENCH_SECRET", "bench-secret-Hq7Wm3Zr9Kt5Lx2Vp8Bn4Cy6Fd1Gj0Se")
TODO_API = os.environ.get("TODO_API_BIN", str(ROOT / ".venv" / "bin" / "todo-api"))
APP_PYTHON = str(Path(TODO_API).with_name("python"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
USERS = 100
TASKS_PER_USER = 50


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    database: str
    description: str

    def url(self, database: str | None = None, *, driver: str = "postgresql") -> str:
        base = PG.rsplit("/", 1)[0].replace("postgresql://", f"{driver}://", 1)
        return f"{base}/{database or self.database}"

    def command(self, port: int, workers: int, *, migrate: bool = True) -> list[str]:
        if self.name == "ours":
            return [TODO_API, "serve", "--port", str(port), "--workers", str(workers)] + (
                [] if migrate else ["--no-migrate"]
            )
        module = "bench.baselines.fastapi_app:app" if self.name == "fastapi" else "bench.baselines.raw_asgi:app"
        return [
            sys.executable, "-m", "uvicorn", module, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    def env(self, database: str | None = None) -> dict[str, str]:
        env = {**os.environ, "BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        for name in ("CORS_ORIGINS", "BETTER_AUTH_URL", "JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
            env.pop(name, None)
        driver = "postgresql+asyncpg" if self.name == "fastapi" else "postgresql"
        env["DATABASE_URL"] = self.url(database, driver=driver)
        if self.name.startswith("raw"):
            env["BENCH_RAW_DRIVER"] = "psycopg" if self.name == "raw-psycopg" else "asyncpg"
        return env

    def create_schema(self, database: str | None = None) -> None:
        if self.name.startswith("ours"):
            subprocess.run([TODO_API, "migrate"], env=self.env(database), check=True, capture_output=True, timeout=120)
        else:
            with psycopg.connect(self.url(database), autocommit=True) as connection:
                connection.execute((BENCH / "baselines" / "schema.sql").read_text())


TARGETS = {
    "ours": Target("ours", PREFIX + "ours", "todo-api: Connexion 3 + SQLAlchemy Core + psycopg 3, RLS"),
    "fastapi": Target("fastapi", PREFIX + "fastapi", "FastAPI + SQLModel (async session over asyncpg)"),
    "raw": Target("raw", PREFIX + "raw", "raw ASGI + asyncpg (the practical ceiling)"),
    "raw-psycopg": Target("raw-psycopg", PREFIX + "raw_psycopg", "raw ASGI + psycopg 3, no prepared statements"),
}


def target(name: str) -> Target:
    if name in TARGETS:
        return TARGETS[name]
    raise SystemExit(f"unknown target {name!r}: {', '.join(TARGETS)}")


# --- databases and seed data ----------------------------------------------------------------

SEED_USERS = """
INSERT INTO users (id, email, name)
SELECT u, u || '@bench.example', 'Bench ' || u FROM unnest(%(users)s::text[]) AS u
"""
# Same shape for every target: a mix of priorities, tags, descriptions and due dates, with
# distinct creation times so that every sort has a stable, realistic order.
SEED_TASKS = """
INSERT INTO tasks (user_id, title, description, completed, priority, tags, due_date, created_at, updated_at)
SELECT u.id,
       format('Task %%s of %%s', n, u.id),
       CASE WHEN n %% 3 = 0 THEN repeat('Some words about the task. ', 1 + n %% 4) END,
       n %% 5 = 0,
       (ARRAY['low', 'medium', 'high', 'urgent'])[1 + n %% 4]::task_priority,
       CASE WHEN n %% %(rare_every)s = 0 THEN ARRAY['rare', 'work']
            WHEN n %% 5 = 0 THEN ARRAY['work']
            WHEN n %% 5 = 1 THEN ARRAY['home', 'errand']
            WHEN n %% 5 = 2 THEN ARRAY['Shopping']
            ELSE '{}' END,
       CASE WHEN n %% 2 = 0 THEN now() + (n %% 400 - 100) * interval '1 day' END,
       now() - (n * %(users_count)s + u.ord) * interval '1 second',
       now() - (n * %(users_count)s + u.ord) * interval '1 second'
FROM unnest(%(users)s::text[]) WITH ORDINALITY AS u(id, ord), generate_series(1, %(per_user)s) AS n
ORDER BY u.ord, n
"""


def admin() -> psycopg.Connection:
    return psycopg.connect(PG, autocommit=True)


def recreate_database(name: str) -> None:
    with admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_databases() -> list[str]:
    """Drop every database named PREFIX… (what these benchmarks create)."""
    with admin() as connection:
        pattern = PREFIX.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
        rows = connection.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern]).fetchall()
        for (name,) in rows:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return [name for (name,) in rows]


def seed(
    target: Target, users: list[str], per_user: int, *, database: str | None = None, rare_every: int = 1000
) -> None:
    with psycopg.connect(target.url(database), autocommit=True) as connection:
        params = {"users": users, "per_user": per_user, "users_count": len(users), "rare_every": rare_every}
        connection.execute(SEED_USERS, params)
        connection.execute(SEED_TASKS, params)
        connection.execute("VACUUM ANALYZE")  # every table, task_tags (filled by a trigger) included


def task_ids(target: Target, database: str | None = None) -> dict[str, list[int]]:
    with psycopg.connect(target.url(database)) as connection:
        rows = connection.execute("SELECT user_id, array_agg(id ORDER BY id) FROM tasks GROUP BY user_id ORDER BY 1")
        return dict(rows.fetchall())


def reset(target: Target, max_id: int) -> None:
    """Back to the seeded state: tasks created by a previous run go (the toggles may stay)."""
    with psycopg.connect(target.url(), autocommit=True) as connection:
        connection.execute("DELETE FROM tasks WHERE id > %s", [max_id])
        connection.execute("VACUUM ANALYZE")


def token(user_id: str, ttl: int = 86400) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "email": f"{user_id}@bench.example", "name": f"Bench {user_id}", "iat": now}
    return jwt.encode({**claims, "exp": now + ttl}, SECRET, algorithm="HS256")


@dataclass
class Prepared:
    target: Target
    data_file: Path
    max_id: int


def prepare(target: Target) -> Prepared:
    """A fresh database for `target` with the workload's users and tasks, and wrk's data file."""
    started = time.monotonic()
    users = [f"u{n:03d}" for n in range(USERS)]
    recreate_database(target.database)
    target.create_schema()
    seed(target, users, TASKS_PER_USER)
    ids = task_ids(target)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data_file = RESULTS / f"{target.name}-workload-data.lua"
    lines = ["return { users = {"]
    for user in users:
        lines.append(f'  {{ token = "{token(user)}", ids = {{ {", ".join(map(str, ids[user]))} }} }},')
    lines.append("} }")
    data_file.write_text("\n".join(lines) + "\n")
    log(f"  {target.name}: database {target.database} seeded ({USERS} users × {TASKS_PER_USER} tasks) "
        f"in {time.monotonic() - started:.1f}s")  # fmt: skip
    return Prepared(target, data_file, max(max(v) for v in ids.values()))


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children, found, stack = _children(), [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each pid still alive (children already reaped are not counted)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return seconds


def postgres_backends(database: str, connection: psycopg.Connection | None = None) -> list[int]:
    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
    if connection is not None:
        return [row[0] for row in connection.execute(query, [database]).fetchall()]
    with admin() as own:
        return [row[0] for row in own.execute(query, [database]).fetchall()]


class BackendCPU(threading.Thread):
    """CPU of the PostgreSQL backends serving `database`, sampled twice a second so that a pooled
    connection closed mid-run (an overflow one) still counts up to its last sample."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.connection = admin()
        self.first = cpu_seconds(postgres_backends(database, self.connection))
        self.last = dict(self.first)
        self.done = threading.Event()

    def _sample(self) -> None:
        self.last.update(cpu_seconds(postgres_backends(self.database, self.connection)))

    def run(self) -> None:
        while not self.done.wait(0.5):
            self._sample()

    def seconds(self) -> float:
        self.done.set()
        self.join()
        self._sample()
        self.connection.close()
        return sum(seconds - self.first.get(pid, 0.0) for pid, seconds in self.last.items())


class Server:
    """One target served by uvicorn (via `todo-api serve` for ours), in its own process group."""

    def __init__(
        self,
        target: Target,
        *,
        workers: int,
        migrate: bool = True,
        database: str | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.target, self.workers, self.migrate = target, workers, migrate
        self.custom_command, self.extra_env = command, env or {}
        self.database = database or target.database
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"{target.name}-server.log"

    def start(self, timeout: float = 90) -> float:
        """Start and wait for the first 200 on /health; the seconds that took."""
        started = time.monotonic()
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in self.custom_command]
                if self.custom_command
                else self.target.command(self.port, self.workers, migrate=self.migrate),
                env={**self.target.env(self.database), **self.extra_env},
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"{self.target.name} did not answer /health in {timeout}s; see {self.log_path}")
            time.sleep(0.01)

    def wait_for_workers(self, timeout: float = 30) -> None:
        """Until every worker answers (the first 200 may come while the others still import)."""
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(self.workers * 20):
            with urllib.request.urlopen(self.base + "/health", timeout=5):
                pass

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the leaves of the process tree."""
        assert self.process is not None
        children = _children()
        return [pid for pid in descendants(self.process.pid) if not children.get(pid) and pid != self.process.pid] or [
            self.process.pid
        ]

    def pids(self) -> list[int]:
        assert self.process is not None
        return descendants(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        self.start()
        self.wait_for_workers()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class Load:
    """One wrk run, with the CPU the server, PostgreSQL and wrk itself used meanwhile."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict[str, Any] = field(default_factory=dict)
    server_cpu_ms: float = 0.0  # per request
    postgres_cpu_ms: float = 0.0  # per request, backends of the target's database
    client_cpu_ms: float = 0.0  # per request, wrk
    busiest_share: float = 0.0  # the busiest server process's part of the server's CPU (even: 1 / workers)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def tail(self) -> float:
        """p99 / p50: how long the tail is against the median."""
        return self.p99_ms / self.p50_ms if self.p50_ms else float("nan")

    def line(self) -> str:
        return (
            f"{self.rps:8.0f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms (×{self.tail:.1f})"
            f"  errors {self.errors}  | CPU/request: server {self.server_cpu_ms:.2f} ms"
            f" (busiest process {self.busiest_share:.0%}), postgres {self.postgres_cpu_ms:.2f} ms,"
            f" wrk {self.client_cpu_ms:.2f} ms"
        )


def wrk(
    url: str,
    script: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    args: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
    server: Server | None = None,
) -> Load:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    command += ["-s", str(BENCH / script), url]
    if args:
        command += ["--", *args]
    server_before = cpu_seconds(server.pids()) if server else {}
    backends = BackendCPU(server.database) if server else None
    if backends:
        backends.start()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = cpu_seconds(server.pids()) if server else {}
    backends_seconds = backends.seconds() if backends else 0.0
    report = next((line for line in finished.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if finished.returncode != 0 or report is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr or finished.stdout}")
    data = json.loads(report.removeprefix("BENCH_JSON "))
    errors = data["errors"]
    count = max(1, data["requests"])
    latency = data["latency_us"]

    by_process = {pid: seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items()}
    server_seconds = sum(by_process.values())

    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=data["non2xx"] + errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        error_detail={**errors, "non2xx": data["non2xx"], "first_bad": data["first_bad"]},
        server_cpu_ms=server_seconds * 1000 / count,
        busiest_share=max(by_process.values()) / server_seconds if server_seconds else 0.0,
        postgres_cpu_ms=backends_seconds * 1000 / count,
        client_cpu_ms=(client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime)
        * 1000
        / count,
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def save(name: str, payload: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
