"""The multi-host topology of docs/operations.md, built on this machine and put through faults
under the bench's mix: three API hosts behind HAProxy, each reaching PostgreSQL through one
multi-host URL straight to the nodes, and pg_auto_failover (a monitor and two data nodes,
synchronous replication) — every host in a network namespace of its own, on a bridge with a
private test range shared only by these namespaces and this machine.

    .venv/bin/python -m tests.support.topology
    .venv/bin/python -m tests.support.topology --connect-costs   # what a silent first host costs each connection

Needs root (namespaces; pg_autoctl runs as the `postgres` OS user) and Debian's haproxy and
postgresql-15-auto-failover, which it installs when missing. As another user it exits 77 with the
reason. It removes every namespace and process it made, also those left by an earlier run that
was killed. Prints one line per step (with its longest request, and what the live streams saw)
and, last, the audits: `stream: events=N missed=0 duplicated=0 …`, `feed: … missed=0
duplicated=0`, `reminders: due=N fired_once=N twice=0 never=0 delivered_once=N` (tests/support/followers.py)
and `acknowledged=N lost=0 duplicates=0 phantom=0 in_doubt_committed=M`; exits 0 when every
check holds.

A host is lost in two ways: killed (its kernel lives on and answers every peer with a reset) or
silent (its link goes down first, as on a power cut or a partition: nothing answers at all).
Nothing of ours acts on the topology after a fault but the fault itself and, later, restarting
the host: the API hosts find the new primary by themselves.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import psycopg

from handlers import cursors
from persistence.database import DEADLINE_MARGIN_SECONDS
from persistence.libpq import conninfo
from tests.support import ROOT
from tests.support.followers import STREAM_TOKEN_SECONDS, Followers
from tests.support.load import MixedLoad, Request, failures, unexpected

SKIPPED = 77  # automake's "skipped" exit status
PACKAGES = ("haproxy", "postgresql-15-auto-failover", "iproute2")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # pg_autoctl refuses to run as root
PREFIX = "tdha-"  # namespaces, the bridge and veth ends are named with it, so leftovers can be found
BRIDGE = "tdha-br"
VETH_PREFIX = "tdv-"  # this machine's end of each host's link
NET = "10.213.7"  # private test range: only these namespaces and this machine's bridge use it
DATABASE = "todo"
LOGIN = "todo_api_login"  # the API hosts' login: a member of todo_api_app and nothing else (docs/operations.md)
API_PORT = 8000
WORKERS = 4  # concurrent clients of the load, one user each
STEP_ANSWERS = 200  # 2xx answers each step waits for once its fault has been handled
STEP_TIMEOUT = 120  # seconds any one condition may take before the scenario fails
REMIND_EVERY = 2.0  # each client of the load sets a reminder this often (tests/support/load.py)
HEARTBEAT = 5  # the API hosts' STREAM_HEARTBEAT_SECONDS: below HAProxy's `timeout server`
SILENCE = 2 * HEARTBEAT + 1  # a stream client hearing nothing this long gives its host up

# The API's bound on a request's database work: its statement timeout plus the margin.
STATEMENT_TIMEOUT_MS = 5000
API_DEADLINE = STATEMENT_TIMEOUT_MS / 1000 + DEADLINE_MARGIN_SECONDS
CONNECT_TIMEOUT = 2  # libpq's per-host connect_timeout in the API hosts' URL (its least value)
# HAProxy: health checks, and the bound on each request it forwards.
CHECK_INTER = 0.5
CHECK_TIMEOUT = 0.5
FALL = RISE = 2
PROXY_CONNECT = 1.0  # per attempt to connect to an API host; a LAN answers in well under a millisecond
PROXY_RETRIES = 2  # further attempts, each on another host, when connecting fails: nothing was sent
PROXY_SERVER = API_DEADLINE + 1  # an API host silent this long: HAProxy answers 503 itself
# Connecting (each attempt, and HAProxy's pause of up to a second before each retry), then the answer.
REQUEST_BOUND = (PROXY_RETRIES + 1) * PROXY_CONNECT + PROXY_RETRIES * min(PROXY_CONNECT, 1.0) + PROXY_SERVER
# A silent host fails FALL checks in a row, each started CHECK_INTER after the last ended.
DETECTION_BOUND = FALL * (CHECK_INTER + CHECK_TIMEOUT) + CHECK_INTER
CLIENT_TIMEOUT = REQUEST_BOUND + 2  # the load's clients give up later than any answer may come


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 5432  # PostgreSQL's; distinct per node, as they share /var/run and the file system

    @property
    def namespace(self) -> str:
        return PREFIX + self.name


MONITOR = Host("monitor", f"{NET}.10", 6010)
NODES = (Host("db1", f"{NET}.11", 6011), Host("db2", f"{NET}.12", 6012))
APIS = tuple(Host(f"api{n}", f"{NET}.2{n}") for n in (1, 2, 3))


def skip_reason() -> str | None:
    """Why the scenario cannot run here, or None (installing Debian's packages when root)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces; pg_autoctl as the postgres OS user) and Debian packages " + ", ".join(
            PACKAGES
        )
    needed = ("haproxy", "pg_autoctl", "ip")
    if any(shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None for tool in needed):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
            subprocess.run(install, env=env, capture_output=True, timeout=900, check=True)
    return None


def sh(*command: str, namespace: str | None = None, check: bool = True) -> str:
    """Run `command` (in `namespace`), return its output; RuntimeError with the output if it fails."""
    argv = ["ip", "netns", "exec", namespace, *command] if namespace else list(command)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def as_os_user(*command: str, **env: str) -> list[str]:
    settings = [f"{key}={value}" for key, value in env.items()]
    return ["runuser", "-u", OS_USER, "--", "env", *settings, *command]


def remove_leftovers() -> None:
    """Kill every process in our namespaces, delete them and the bridge (also an earlier run's)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        namespace = line.split()[0] if line.split() else ""
        if namespace.startswith(PREFIX):
            kill_namespace(namespace)
            sh("ip", "netns", "delete", namespace, check=False)
    # A namespace outlives its deletion while sockets in it wind down, and with it its veth pair:
    # delete the pairs from this side so the next run can make them again.
    for line in sh("ip", "-o", "link", "show", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") > 1 else ""
        if name.startswith(VETH_PREFIX):
            sh("ip", "link", "delete", name, check=False)
    sh("ip", "link", "delete", BRIDGE, check=False)


def kill_namespace(namespace: str) -> None:
    """SIGKILL every process in `namespace`, as a host losing power would stop them."""
    for _ in range(50):
        pids = [int(pid) for pid in sh("ip", "netns", "pids", namespace, check=False).split()]
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise RuntimeError(f"processes in {namespace} survive SIGKILL")


def set_link(host: Host, state: str) -> None:
    """The host's only link `up` or `down`: down, nothing it sends leaves and nothing reaches it."""
    sh("ip", "-n", host.namespace, "link", "set", "eth0", state)


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """`condition()`'s first truthy answer, polled; RuntimeError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(Exception):
            if answer := condition():
                return answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Topology:
    """The hosts, their processes and their files; `close()` removes all of it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="todo-api-topology-"))
        self.folder.chmod(0o755)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.secret = secrets.token_urlsafe(48)
        self.password = secrets.token_urlsafe(24)  # the API hosts' login's
        self.lb_port = free_port()

    # -- the network ------------------------------------------------------------------------
    def network(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for host in (MONITOR, *NODES, *APIS):
            sh("ip", "netns", "add", host.namespace)
            outside = VETH_PREFIX + host.name
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            sh("ip", "link", "set", outside, "master", BRIDGE, "up")
            sh("ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            set_link(host, "up")
            sh("ip", "-n", host.namespace, "link", "set", "lo", "up")

    # -- processes --------------------------------------------------------------------------
    def spawn(self, name: str, host: Host, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        command = ["ip", "netns", "exec", host.namespace, *argv]
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        log.close()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- pg_auto_failover -------------------------------------------------------------------
    def node_folder(self, host: Host) -> Path:
        folder = self.folder / host.name
        for sub in ("", "xdg-config", "xdg-data", "run"):
            (folder / sub).mkdir(exist_ok=True)
            shutil.chown(folder / sub, OS_USER, OS_USER)
        return folder

    def autoctl(self, host: Host, *args: str) -> list[str]:
        folder = self.folder / host.name
        env = {
            "XDG_CONFIG_HOME": str(folder / "xdg-config"),
            "XDG_DATA_HOME": str(folder / "xdg-data"),
            "XDG_RUNTIME_DIR": str(folder / "run"),
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
        }
        return as_os_user("pg_autoctl", *args, "--pgdata", str(folder / "data"), **env)

    def monitor_url(self) -> str:
        return f"postgres://autoctl_node@{MONITOR.address}:{MONITOR.port}/pg_auto_failover?sslmode=disable"

    def open_hba(self, host: Host) -> None:
        """The API hosts' login by password; the rest of the test network (and nothing else) trusted."""
        data = self.folder / host.name / "data"
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(
                f"host all {LOGIN} {NET}.0/24 scram-sha-256\n"
                f"host all all {NET}.0/24 trust\nhost replication all {NET}.0/24 trust\n"
                "host all all 127.0.0.1/32 trust\n"
            )

    def monitor(self) -> None:
        self.node_folder(MONITOR)
        common = ("--pgport", str(MONITOR.port), "--hostname", MONITOR.address, "--no-ssl")
        sh(*self.autoctl(MONITOR, "create", "monitor", *common, "--skip-pg-hba", "--pgctl", str(PG_BIN / "pg_ctl")),
           namespace=MONITOR.namespace)  # fmt: skip
        self.open_hba(MONITOR)
        # Fail over in seconds, not the default half minute: a host gone is checked every second.
        with (self.folder / MONITOR.name / "data" / "postgresql.conf").open("a") as conf:
            conf.write(
                "pgautofailover.health_check_period = 1000\npgautofailover.health_check_timeout = 1000\n"
                "pgautofailover.health_check_max_retries = 1\npgautofailover.health_check_retry_delay = 500\n"
                "pgautofailover.node_considered_unhealthy_timeout = 3000\n"
                "pgautofailover.primary_demote_timeout = 5000\n"
            )
        self.spawn("monitor", MONITOR, self.autoctl(MONITOR, "run"))
        wait_for(lambda: self.node_states() is not None, what="the monitor")

    def data_node(self, host: Host) -> None:
        self.node_folder(host)
        create = self.autoctl(
            host, "create", "postgres", "--pgport", str(host.port), "--listen", host.address,
            "--hostname", host.address, "--name", host.name, "--dbname", DATABASE, "--monitor", self.monitor_url(),
            "--no-ssl", "--skip-pg-hba", "--pgctl", str(PG_BIN / "pg_ctl"),
        )  # fmt: skip
        if host is NODES[0]:
            sh(*create, namespace=host.namespace)
            self.open_hba(host)  # the standby's pg_basebackup copies it
            self.spawn(host.name, host, self.autoctl(host, "run"))
        else:
            self.spawn(host.name, host, [*create, "--run"])

    def restart_node(self, host: Host) -> None:
        self.spawn(host.name, host, self.autoctl(host, "run"))

    def node_states(self) -> dict[str, tuple[str, str]] | None:
        """Each data node's (reported, assigned) state, as the monitor sees them."""
        dsn = f"host={MONITOR.address} port={MONITOR.port} user=postgres dbname=pg_auto_failover connect_timeout=2"
        with psycopg.connect(dsn) as connection:
            rows = connection.execute("SELECT nodename, reportedstate, goalstate FROM pgautofailover.node").fetchall()
        return {name: (str(reported), str(goal)) for name, reported, goal in rows}

    def wait_for_states(self, wanted: dict[str, str]) -> None:
        def reached() -> bool:
            states = self.node_states() or {}
            return all(states.get(name) == (state, state) for name, state in wanted.items())

        wait_for(reached, what=f"nodes in states {wanted} (now {self.safe_states()})")

    def safe_states(self) -> dict[str, tuple[str, str]] | str:
        try:
            return self.node_states() or {}
        except psycopg.Error as error:
            return f"monitor unreachable: {error}"

    def primary(self) -> Host:
        """The node the monitor has made primary and that says so (a dead one keeps its last report)."""
        states = self.node_states() or {}
        return next(
            host
            for host in NODES
            if states.get(host.name, ("", ""))[0] == states.get(host.name, ("", ""))[1]
            and states[host.name][0] in ("primary", "wait_primary")
        )

    # -- the API hosts and HAProxy ----------------------------------------------------------
    def database_url(self, user: str = "postgres", password: str = "") -> str:
        """Every node in one libpq URL, as `pg_autoctl show uri` gives it; libpq keeps the one
        that accepts writes, and the pool tries first the one that accepted last."""
        hosts = ",".join(host.address for host in NODES)
        ports = ",".join(str(host.port) for host in NODES)
        login = f"{user}:{password}" if password else user
        return (
            f"postgresql://{login}@/{DATABASE}?host={hosts}&port={ports}"
            f"&target_session_attrs=read-write&connect_timeout={CONNECT_TIMEOUT}"
        )

    def migrate(self) -> None:
        """Migrate as the owner, then make the API hosts' least-privilege login (docs/operations.md, Neon)."""
        env = {**os.environ, "DATABASE_URL": self.database_url(), "BETTER_AUTH_SECRET": self.secret}
        subprocess.run([sys.executable, "-m", "todo_api.cli", "migrate"], env=env, cwd=ROOT, check=True, timeout=120)
        with psycopg.connect(self.database_url(), autocommit=True) as connection:
            connection.execute(f"CREATE ROLE {LOGIN} LOGIN PASSWORD '{self.password}' IN ROLE todo_api_app")

    def api(self, host: Host) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": self.database_url(LOGIN, self.password),
            "DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
            "BETTER_AUTH_SECRET": self.secret,
            "STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "LOG_LEVEL": "WARNING",
        }
        serve = [sys.executable, "-m", "todo_api.cli", "serve", "--no-migrate", "--workers", "1"]
        self.spawn(host.name, host, [*serve, "--host", host.address, "--port", str(API_PORT)], env=env)

    def balancer(self) -> None:
        servers = "".join(f"    server {h.name} {h.address}:{API_PORT} check\n" for h in APIS)
        config = self.folder / "haproxy.cfg"
        config.write_text(
            "global\n    maxconn 2000\n"
            f"    stats socket {self.folder / 'haproxy.sock'} level admin\n"
            "defaults\n    mode http\n"
            f"    timeout connect {ms(PROXY_CONNECT)}\n    timeout server {ms(PROXY_SERVER)}\n"
            f"    timeout client 30s\n    timeout check {ms(CHECK_TIMEOUT)}\n"
            f"    retries {PROXY_RETRIES}\n    option redispatch 1\n"
            f"listen api\n    bind 127.0.0.1:{self.lb_port}\n    balance roundrobin\n"
            "    option httpchk GET /ready\n    http-check expect status 200\n"
            f"    default-server inter {ms(CHECK_INTER)} fall {FALL} rise {RISE}\n"
            f"    errorfile 503 {self.unavailable(503, 'no API host is ready')}\n"
            f"    errorfile 502 {self.unavailable(502, 'the API host failed to answer')}\n"
            f"    errorfile 504 {self.unavailable(504, 'the API host did not answer in time')}\n"
            f"{servers}"
        )
        sh("haproxy", "-c", "-f", str(config))
        log = (self.folder / "haproxy.log").open("ab")
        self.processes.append(
            subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        )
        log.close()

    def unavailable(self, instead_of: int, detail: str) -> Path:
        """HAProxy's answer in place of its own `instead_of`: the service's 503, problem+json with
        Retry-After — the client cannot tell whether a write it sent was done, and retries it."""
        body = (
            '{"type":"about:blank","title":"Service Unavailable","status":503,'
            f'"detail":"{detail}","error":"{detail}"}}'
        )
        path = self.folder / f"{instead_of}.http"
        path.write_text(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
            f"Retry-After: 2\r\nCache-Control: no-store\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        )
        return path

    def server_stats(self) -> dict[str, tuple[str, int]]:
        """HAProxy's view of each API host: its state (UP, DOWN …) and the sessions it was sent."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.folder / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
        return {row[1]: (row[17], int(row[7])) for row in rows if row[1] in {h.name for h in APIS}}

    def connections_made(self) -> tuple[float, float]:
        """Connections the API hosts' pools have made, and the seconds making them took, in all."""
        made = seconds = 0.0
        for host in APIS:
            with suppress(httpx.HTTPError):
                metrics = httpx.get(f"http://{host.address}:{API_PORT}/metrics", timeout=2).text
                values = {
                    name: float(value)
                    for name, _, value in (line.partition(" ") for line in metrics.splitlines())
                    if name.startswith("todo_api_db_pool_connect")
                }
                made += values["todo_api_db_pool_connects_total"] - values["todo_api_db_pool_connect_errors_total"]
                seconds += values["todo_api_db_pool_connect_milliseconds_total"] / 1000
        return made, seconds

    def server_state(self, host: Host) -> str:
        return self.server_stats()[host.name][0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def connect(self) -> psycopg.Connection[Any]:
        """The current primary, as the superuser (row-level security does not bind it)."""
        return psycopg.connect(self.database_url(), connect_timeout=5)

    def close(self) -> None:
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.kill()
        remove_leftovers()
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def topology() -> Iterator[Topology]:
    remove_leftovers()
    built = Topology()
    try:
        built.network()
        built.monitor()
        built.data_node(NODES[0])
        built.wait_for_states({NODES[0].name: "single"})
        built.data_node(NODES[1])
        built.wait_for_states({NODES[0].name: "primary", NODES[1].name: "secondary"})
        built.migrate()
        for host in APIS:
            built.api(host)
        for host in APIS:
            wait_for(partial(answers, f"http://{host.address}:{API_PORT}/ready"), what=f"{host.name} ready")
        built.balancer()
        wait_for(lambda: all(built.server_state(h) == "UP" for h in APIS), what="HAProxy seeing every API host UP")
        yield built
    except BaseException:
        for name in ("monitor", *(n.name for n in NODES), *(a.name for a in APIS), "haproxy"):
            print(f"--- {name} log ---\n{built.log(name)}", file=sys.stderr)
        raise
    finally:
        built.close()


class Observer(Protocol):
    """What runs beside the load through every step and is judged against the database at the
    end — the load itself, and clients holding replicas of their own (tests/support/followers.py)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *_: object) -> None: ...

    def verdict(self, database: psycopg.Connection[Any]) -> tuple[str, list[str]]:
        """The line(s) to print, judged against `database` (the primary, as the superuser), and
        what failed."""
        ...


Continuation = Callable[[], None]


@dataclass
class Step:
    """One fault and what follows it. `act` injects the fault, waits until the topology has dealt
    with it, and notes what it measured in `facts` and what did not hold in `failures`; the step
    then runs until `STEP_ANSWERS` more answers came, and then whatever `act` returned (checks
    that needed that traffic, bringing a host back)."""

    name: str
    act: Callable[[Topology, Step], Continuation | None]
    faultless: bool = False  # only 2xx (beside retries confirming the last fault's in-doubt writes)
    started: float = 0.0
    ended: float = float("inf")
    facts: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def requests(self, load: list[Request]) -> list[Request]:
        """Those answered (or failed) during this step: those in flight when its fault struck
        belong to it, not to the step they were sent in."""
        return [r for r in load if self.started <= r.ended < self.ended]

    def check(self, load: list[Request]) -> None:
        mine = self.requests(load)
        # A retry confirming that its in-doubt attempt committed may end after its fault's step:
        # it is that fault's, not a failure of a step without one.
        failed = [r for r in mine if not r.succeeded and not r.confirms_commit]
        if self.faultless and failed:
            self.failures.append(f"answers other than 2xx: {failures(failed)}")
        if stray := unexpected(mine):
            self.failures.append(f"answers a careful client never gets: {stray}")
        if late := [r for r in mine if r.seconds > REQUEST_BOUND]:
            self.failures.append(f"{len(late)} requests took longer than {REQUEST_BOUND:.0f} s: {failures(late)}")
        if bare := [r for r in mine if r.status == 503 and not r.retry_after]:
            self.failures.append(f"{len(bare)} answers 503 without Retry-After")

    def report(self, load: list[Request]) -> str:
        mine = self.requests(load)
        counts = Counter("2xx" if r.succeeded else "no_answer" if r.status is None else str(r.status) for r in mine)
        longest = max(mine, key=lambda r: r.seconds, default=None)
        failed = [r.ended for r in mine if not r.succeeded]
        facts = {
            "requests": str(len(mine)),
            **{status: str(n) for status, n in sorted(counts.items())},
            "longest": f"{longest.seconds:.1f}s ({longest.operation} {longest.status})" if longest else "-",
            "time_to_recovery": f"{max(failed) - self.started:.1f}s" if failed else "0.0s",
            **self.facts,
        }
        return f"step {self.name}: " + " ".join(f"{key}={value}" for key, value in facts.items())


def kill_api_host(top: Topology, step: Step) -> Continuation:
    """SIGKILL an API host: its kernel resets every connection to it at once."""
    victim = APIS[0]
    kill_namespace(victim.namespace)
    step.facts["down_after"] = f"{since(step.started, lambda: top.server_state(victim).startswith('DOWN')):.1f}s"
    return partial(restart_api_host, top, victim)


def silence_api_host(top: Topology, step: Step) -> Continuation:
    """An API host goes silent, then its processes die: HAProxy must notice within its checks."""
    victim = APIS[1]
    set_link(victim, "down")
    kill_namespace(victim.namespace)
    down_after = since(step.started, lambda: top.server_state(victim).startswith("DOWN"))
    step.facts["down_after"] = f"{down_after:.1f}s"
    if down_after > DETECTION_BOUND:
        step.failures.append(f"HAProxy marked {victim.name} DOWN after {down_after:.1f} s, not {DETECTION_BOUND} s")
    sent = top.server_stats()[victim.name][1]

    def back() -> None:
        if (later := top.server_stats()[victim.name][1] - sent) > 0:
            step.failures.append(f"HAProxy sent {later} requests to {victim.name} after marking it DOWN")
        set_link(victim, "up")
        restart_api_host(top, victim)

    return back


def restart_api_host(top: Topology, host: Host) -> None:
    top.api(host)
    wait_for(lambda: top.server_state(host) == "UP", what=f"HAProxy seeing {host.name} UP again")


def fail_primary(*, silent: bool) -> Callable[[Topology, Step], Continuation]:
    """The primary's host dies (silent: its link goes down first); the monitor promotes the standby
    and the API hosts find it by themselves. Notes the connections they made meanwhile, and how
    long each took on average (a first host that stays silent costs its connect timeout)."""

    def act(top: Topology, step: Step) -> Continuation:
        old = top.primary()
        new = next(node for node in NODES if node is not old)
        before = top.connections_made()
        if silent:
            set_link(old, "down")
        kill_namespace(old.namespace)
        step.facts["promoted_after"] = f"{since(step.started, lambda: top.primary() is new):.1f}s"

        def made() -> None:
            count, seconds = (after - earlier for after, earlier in zip(top.connections_made(), before, strict=True))
            step.facts["connections_made"] = f"{count:.0f}"
            step.facts["connect_mean"] = f"{seconds / count:.2f}s" if count else "-"

        return made

    return act


def rejoin_old_primary(top: Topology, step: Step) -> None:
    old = next(node for node in NODES if node is not top.primary())
    set_link(old, "up")
    top.restart_node(old)
    top.wait_for_states({top.primary().name: "primary", old.name: "secondary"})
    step.facts["rejoined_after"] = f"{time.monotonic() - step.started:.1f}s"


def since(started: float, condition: Callable[[], Any]) -> float:
    """Seconds from `started` until `condition()` holds."""
    wait_for(condition, what="a step's condition")
    return time.monotonic() - started


def steps() -> tuple[Step, ...]:
    """The scenario, in order; each step starts when the one before it has ended."""
    return (
        Step("0 no fault", lambda top, step: None, faultless=True),
        Step("1 SIGKILL API host api1, then restart it", kill_api_host),
        Step("2 API host api2 silent (link down, then SIGKILL), then back", silence_api_host),
        # db1 is the first host of the API hosts' URL: the case that costs a connect timeout.
        Step(
            "3 primary host db1 silent (link down, then SIGKILL PostgreSQL and its keeper)", fail_primary(silent=True)
        ),
        Step("4 db1 back (link up), rejoining as standby", rejoin_old_primary, faultless=True),
        Step("5 SIGKILL primary host db2 (PostgreSQL and its keeper)", fail_primary(silent=False)),
        Step("6 db2 back, rejoining as standby", rejoin_old_primary, faultless=True),
    )


def answered_by_all(load: MixedLoad, after: float) -> Callable[[list[Request]], bool]:
    """`STEP_ANSWERS` 2xx answers to requests sent after `after`, and a request sent after it by
    every user (so none is still in flight from before)."""
    return lambda seen: (
        sum(1 for r in seen if r.started > after and r.succeeded) >= STEP_ANSWERS
        and {r.user for r in seen if r.started > after} == set(load.users)
    )


def run() -> int:
    """Build the topology, run the steps under load, print the report; 0 when every check holds."""
    with topology() as top:

        def token(user: str, life: int = 3600) -> str:
            now = int(time.time())
            return jwt.encode({"sub": user, "iat": now, "exp": now + life}, top.secret, algorithm="HS256")

        load = MixedLoad(top.url, token, workers=WORKERS, timeout=CLIENT_TIMEOUT, remind_every=REMIND_EVERY)
        followers = Followers(
            load,
            hosts=[f"http://{host.address}:{API_PORT}" for host in APIS],
            balancer=top.url,
            token=partial(token, life=STREAM_TOKEN_SECONDS),
            keys=cursors.keyring([top.secret], cursors.CHANGE_TOKEN),
            connect=top.connect,
            silence=SILENCE,
        )
        observers: list[Observer] = [followers, load]  # the followers start first, and stop last
        scenario = steps()
        with ExitStack() as running:
            scenario[0].started = time.monotonic()
            for observer in observers:
                running.enter_context(observer)
            for number, step in enumerate(scenario):
                if number:
                    step.started = scenario[number - 1].ended = time.monotonic()
                then = step.act(top, step)
                load.wait_until(answered_by_all(load, time.monotonic()), timeout=STEP_TIMEOUT, what=step.name)
                if then is not None:
                    then()
        with top.connect() as database:
            verdicts = [observer.verdict(database) for observer in observers]
        logs = {host.name: top.log(host.name) for host in APIS}  # each 503 names its cause there
    requests = load.requests
    for step in scenario:
        step.facts.update(followers.facts(step.started, step.ended))
        step.check(requests)
        print(step.report(requests), flush=True)
        if failed := failures(step.requests(requests)):
            print(f"  errors: {failed}", flush=True)
    problems = [f"step {step.name}: {failure}" for step in scenario for failure in step.failures]
    if problems:
        for host, log in logs.items():
            print(f"--- {host} log ---\n{log}", file=sys.stderr)
    for problem in problems:
        print(f"FAILED: {problem}", flush=True)
    for line, failed_checks in verdicts:
        for failure in failed_checks:
            print(f"FAILED: {failure}", flush=True)
        problems += failed_checks
        print(line, flush=True)
    return 1 if problems else 0


def connect_costs(count: int = 4) -> int:
    """What each new connection costs while the first host of a multi-host URL is silent and the
    second has been promoted, for each way of writing the URL: `count` connections in a row each."""
    with topology() as top:
        silent, promoted = NODES
        set_link(silent, "down")
        kill_namespace(silent.namespace)
        wait_for(lambda: top.primary() is promoted, what=f"pg_auto_failover promoting {promoted.name}")
        url = top.database_url()
        reordered = url.replace(
            f"host={silent.address},{promoted.address}&port={silent.port},{promoted.port}",
            f"host={promoted.address},{silent.address}&port={promoted.port},{silent.port}",
        )
        variants = {
            "connect_timeout=5 (the service's default)": url.replace(
                f"connect_timeout={CONNECT_TIMEOUT}", "connect_timeout=5"
            ),
            f"connect_timeout={CONNECT_TIMEOUT}": url,
            f"connect_timeout={CONNECT_TIMEOUT}, load_balance_hosts=random": url + "&load_balance_hosts=random",
            f"connect_timeout={CONNECT_TIMEOUT}, target_session_attrs=primary": url.replace(
                "target_session_attrs=read-write", "target_session_attrs=primary"
            ),
            "the host that accepted last first (the pool, after its first connection)": reordered,
        }
        for name, variant in variants.items():
            costs = []
            for _ in range(count):
                started = time.monotonic()
                psycopg.connect(conninfo(variant)).close()
                costs.append(time.monotonic() - started)
            print(f"{name}: " + " ".join(f"{cost:.2f}s" for cost in costs), flush=True)
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still clean up (finally)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return SKIPPED
    return connect_costs() if sys.argv[1:] == ["--connect-costs"] else run()


if __name__ == "__main__":
    sys.exit(main())
