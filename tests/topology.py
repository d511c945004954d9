"""The multi-host topology of docs/operations.md, built on this machine and put through faults
under a bounded write load: three API hosts behind HAProxy, PgBouncer (transaction mode) beside
each PostgreSQL node, and pg_auto_failover (a monitor and two data nodes, synchronous
replication) — every host in a network namespace of its own, on a bridge with a private test
range shared only by these namespaces and this machine.

    .venv/bin/python -m tests.topology

Needs root (namespaces; pg_autoctl runs as the `postgres` OS user) and Debian's haproxy,
pgbouncer and postgresql-15-auto-failover, which it installs when missing. As another user it
exits 77 with the reason. It removes every namespace and process it made, also those left by an
earlier run that was killed. Prints one line per step and `acknowledged=N lost=0 phantom=0`.
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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg

from tests.load import Outcome, WriteLoad, audit, errors

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = 77  # automake's "skipped" exit status
PACKAGES = ("haproxy", "pgbouncer", "postgresql-15-auto-failover", "iproute2")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # pg_autoctl refuses to run as root
PREFIX = "tdha-"  # namespaces, the bridge and veth ends are named with it, so leftovers can be found
BRIDGE = "tdha-br"
VETH_PREFIX = "tdv-"  # this machine's end of each host's link
NET = "10.213.7"  # private test range: only these namespaces and this machine's bridge use it
DATABASE = "todo"
POOLER_PORT = 6432
API_PORT = 8000
WORKERS = 4  # concurrent clients of the load
STEP_WRITES = 150  # acknowledged writes each step waits for after its fault has been handled
STEP_TIMEOUT = 120  # seconds any one condition may take before the scenario fails


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
    needed = ("haproxy", "pgbouncer", "pg_autoctl", "ip")
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


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """`condition()`'s first truthy answer, polled; RuntimeError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(Exception):
            if answer := condition():
                return answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class Topology:
    """The hosts, their processes and their files; `close()` removes all of it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="todo-api-topology-"))
        self.folder.chmod(0o755)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.secret = secrets.token_urlsafe(48)
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
            sh("ip", "-n", host.namespace, "link", "set", "eth0", "up")
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
        """Trust the test network (and nothing else) for every database and replication."""
        data = self.folder / host.name / "data"
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(
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

    # -- PgBouncer, the API hosts and HAProxy ------------------------------------------------
    def pooler(self, host: Host) -> None:
        folder = self.folder / host.name
        (folder / "users.txt").write_text('"postgres" ""\n')
        ini = folder / "pgbouncer.ini"
        ini.write_text(
            f"[databases]\n{DATABASE} = host={host.address} port={host.port} dbname={DATABASE} user=postgres\n\n"
            "[pgbouncer]\n"
            f"listen_addr = {host.address}\nlisten_port = {POOLER_PORT}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 20\nmax_client_conn = 500\n"
            "server_login_retry = 1\nserver_connect_timeout = 3\nquery_wait_timeout = 10\nadmin_users = postgres\n"
        )
        self.spawn(f"pgbouncer-{host.name}", host, as_os_user("pgbouncer", str(ini)))
        wait_for(lambda: port_open(host.address, POOLER_PORT), what=f"PgBouncer on {host.name}")

    def reconnect_pooler(self, host: Host) -> None:
        """Make `host`'s PgBouncer drop its server connections and the server parameters it cached.

        PgBouncer 1.18 replays to every client the parameters its first server login reported; a
        node promoted since still says in_hot_standby=on, and libpq's target_session_attrs then
        refuses it. RECONNECT is PgBouncer's documented failover command."""
        sh(
            "psql",
            "-X",
            "-q",
            "-h",
            host.address,
            "-p",
            str(POOLER_PORT),
            "-U",
            "postgres",
            "pgbouncer",
            "-c",
            "RECONNECT",
        )

    def database_url(self, *, pooled: bool) -> str:
        """Every node in one libpq URL; libpq picks the one that accepts writes."""
        hosts = ",".join(host.address for host in NODES)
        ports = ",".join(str(POOLER_PORT if pooled else host.port) for host in NODES)
        return f"postgresql://postgres@/{DATABASE}?host={hosts}&port={ports}&target_session_attrs=read-write"

    def migrate(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.database_url(pooled=False), "BETTER_AUTH_SECRET": self.secret}
        subprocess.run([sys.executable, "-m", "todo_api.cli", "migrate"], env=env, cwd=ROOT, check=True, timeout=120)

    def api(self, host: Host) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": self.database_url(pooled=True),
            "BETTER_AUTH_SECRET": self.secret,
            "LOG_LEVEL": "WARNING",
        }
        serve = [sys.executable, "-m", "todo_api.cli", "serve", "--no-migrate", "--workers", "1"]
        self.spawn(host.name, host, [*serve, "--host", host.address, "--port", str(API_PORT)], env=env)

    def balancer(self) -> None:
        problem = (
            '{"type":"about:blank","title":"Service Unavailable","status":503,'
            '"detail":"no API host is ready","error":"no API host is ready"}'
        )
        servers = "".join(f"    server {h.name} {h.address}:{API_PORT} check\n" for h in APIS)
        config = self.folder / "haproxy.cfg"
        config.write_text(
            "global\n    maxconn 2000\n"
            f"    stats socket {self.folder / 'haproxy.sock'} level admin\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
            "    retries 2\n    option redispatch\n"
            f"listen api\n    bind 127.0.0.1:{self.lb_port}\n    balance roundrobin\n"
            "    option httpchk GET /ready\n    http-check expect status 200\n"
            "    default-server inter 500ms fall 2 rise 2\n"
            f"    http-error status 503 content-type application/problem+json hdr Retry-After 2 string '{problem}'\n"
            f"{servers}"
        )
        sh("haproxy", "-c", "-f", str(config))
        log = (self.folder / "haproxy.log").open("ab")
        self.processes.append(
            subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        )
        log.close()

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each API host: UP, DOWN …"""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.folder / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
        return {row[1]: row[17] for row in rows if row[1] in {h.name for h in APIS}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def stored_titles(self, users: list[str]) -> set[str]:
        url = self.database_url(pooled=False).replace("postgresql://", "postgresql://", 1)
        with psycopg.connect(url, connect_timeout=5) as connection:
            rows = connection.execute("SELECT title FROM tasks WHERE user_id = ANY(%s)", [users]).fetchall()
        return {title for (title,) in rows}

    def close(self) -> None:
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.kill()
        remove_leftovers()
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


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
        for node in NODES:
            built.pooler(node)
        built.migrate()
        for host in APIS:
            built.api(host)
        for host in APIS:
            ready = f"http://{host.address}:{API_PORT}/ready"
            wait_for(partial(answers, ready), what=f"{host.name} ready")
        built.balancer()
        wait_for(lambda: set(built.server_states().values()) == {"UP"}, what="HAProxy seeing every API host UP")
        yield built
    except BaseException:
        for name in ("monitor", *(n.name for n in NODES), *(a.name for a in APIS), "haproxy"):
            print(f"--- {name} log ---\n{built.log(name)}", file=sys.stderr)
        raise
    finally:
        built.close()


@dataclass
class Step:
    name: str
    started: float
    ended: float = 0.0

    def outcomes(self, load: list[Outcome]) -> list[Outcome]:
        """The requests answered (or failed) during this step: those in flight when its fault
        struck belong to it, not to the step they were sent in."""
        return [o for o in load if self.started <= o.ended < (self.ended or float("inf"))]

    def report(self, load: list[Outcome], lost: set[str]) -> str:
        mine = self.outcomes(load)
        errors = Counter(str(o.status) for o in mine if o.status is not None and o.status >= 500)
        no_answer = sum(1 for o in mine if o.status is None)
        failures = [o.ended for o in mine if o.status != 201]
        recovery = max(failures) - self.started if failures else 0.0
        return (
            f"step {self.name}: requests={len(mine)} acknowledged={sum(o.status == 201 for o in mine)} "
            f"lost={sum(o.title in lost for o in mine)} 5xx={dict(errors)} no_answer={no_answer} "
            f"time_to_recovery={recovery:.1f}s"
        )


def acknowledged_since(since: float, count: int) -> Callable[[list[Outcome]], bool]:
    return lambda seen: sum(1 for o in seen if o.status == 201 and o.started > since) >= count


def run() -> int:
    """Build the topology, run the three steps under load, print the report; 0 when every check holds."""
    failures: list[str] = []
    with topology() as top:

        def token(user: str) -> str:
            now = int(time.time())
            return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, top.secret, algorithm="HS256")

        steps: list[Step] = []

        def begin(name: str) -> None:
            now = time.monotonic()
            if steps:
                steps[-1].ended = now
            steps.append(Step(name, now))

        with WriteLoad(top.url, token, workers=WORKERS, limit=30_000, seconds=600) as load:
            load.wait_until(acknowledged_since(0, 50), timeout=STEP_TIMEOUT, what="writes before any fault")

            victim = APIS[0]
            begin(f"1 SIGKILL API host {victim.name}")
            kill_namespace(victim.namespace)
            wait_for(
                lambda: top.server_states()[victim.name].startswith("DOWN"), what=f"HAProxy marking {victim.name} DOWN"
            )
            load.wait_until(acknowledged_since(time.monotonic(), STEP_WRITES), timeout=STEP_TIMEOUT, what="step 1")

            old = top.primary()
            new = next(node for node in NODES if node is not old)
            begin(f"2 SIGKILL primary host {old.name} (PostgreSQL, keeper, PgBouncer)")
            kill_namespace(old.namespace)
            wait_for(lambda: top.primary() is new, what=f"pg_auto_failover promoting {new.name}")
            top.reconnect_pooler(new)
            load.wait_until(acknowledged_since(time.monotonic(), STEP_WRITES), timeout=STEP_TIMEOUT, what="step 2")

            begin(f"3 {old.name} back, rejoining as standby")
            top.restart_node(old)
            top.wait_for_states({new.name: "primary", old.name: "secondary"})
            top.pooler(old)
            load.wait_until(acknowledged_since(time.monotonic(), STEP_WRITES), timeout=STEP_TIMEOUT, what="step 3")
        outcomes = load.outcomes
        lost, phantom = audit(outcomes, top.stored_titles(load.users))
        for step in steps:
            print(step.report(outcomes, lost), flush=True)
            if failed := errors(step.outcomes(outcomes)):
                print(f"  errors: {failed}", flush=True)

        one, two, three = (step.outcomes(outcomes) for step in steps)
        in_flight_errors = [o for o in one if o.status != 201]
        if len(in_flight_errors) > WORKERS:
            failures.append(f"step 1: more errors than the {WORKERS} requests in flight: {errors(one)}")
        if any(o.status not in (201, 503) for o in two) or any(o.status == 503 and not o.retry_after for o in two):
            failures.append(f"step 2: answers other than 201 and 503 with Retry-After: {errors(two)}")
        if any(o.status != 201 for o in three):
            failures.append(f"step 3: not error-free: {errors(three)}")
        if lost or phantom:
            failures.append(f"{len(lost)} acknowledged writes lost, {len(phantom)} phantom writes")
    acknowledged = sum(1 for o in outcomes if o.status == 201)
    print(f"acknowledged={acknowledged} lost={len(lost)} phantom={len(phantom)}", flush=True)
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
    return 1 if failures else 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still clean up (finally)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return SKIPPED
    return run()


if __name__ == "__main__":
    sys.exit(main())
