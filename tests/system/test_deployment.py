"""From a checkout to a deployment, as the Dockerfile does it but without a container runtime (none
runs on this project's machines): build the sdist and the wheel from it, install the wheel and the
runtime lock into a fresh virtualenv as a user without privileges, then — from a folder that has
nothing of the repository, with only environment variables — run the migration job, the image's
CMD and HEALTHCHECK, and a first session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from persistence import schema
from tests.support import ROOT, pooler
from tests.support.problems import assert_problem
from tests.support.processes import LoggedProcess, answers, free_port, wait_until_up
from tests.support.tokens import SECRET

DOCKERFILE = (ROOT / "Dockerfile").read_text()
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
NOBODY = 65534  # Debian's `nobody` and `nogroup`
DEVELOPMENT_TOOLS = {"pytest", "mypy", "ruff", "schemathesis", "hypothesis", "build"}


def exec_form(instruction: str) -> list[str]:
    """The JSON argument list of the Dockerfile's `instruction` (`CMD`, or `HEALTHCHECK`'s CMD)."""
    match = re.search(rf"^{instruction}\b.*?(\[.*\])\s*$", DOCKERFILE, re.MULTILINE)
    assert match, f"the Dockerfile has no {instruction} in exec form"
    command: list[str] = json.loads(match[1])
    return command


def image_env() -> dict[str, str]:
    """The final stage's ENV (after its last FROM), with $PATH as a container would expand it."""
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.MULTILINE):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


@dataclass
class Machine:
    """A fresh venv with the wheel installed, owned by an unprivileged user, and a folder of its own."""

    venv: Path
    home: Path
    elsewhere: Path

    def env(self, **variables: str) -> dict[str, str]:
        """Only what a container gets: the image's ENV, with its venv first on PATH, and `variables`."""
        base = {**image_env(), "HOME": str(self.home)}
        base["PATH"] = f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        return {**base, **variables}

    def run(self, *command: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            env=env,
            cwd=self.elsewhere,
            capture_output=True,
            text=True,
            timeout=timeout,
            **unprivileged(),
        )


def unprivileged() -> dict[str, Any]:
    """subprocess options that drop root to `nobody`; nothing for a user who is not root."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


def python_for(machine: Machine) -> str:
    """A Python 3.11+ with venv that the unprivileged user may run: ours, unless root's is private
    (pyenv under /root), then the system's."""
    probe = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"
    for python in (str(Path(sys.base_prefix) / "bin" / "python3"), "/usr/bin/python3"):
        try:
            if machine.run(python, "-c", probe, env=machine.env()).returncode == 0:
                return python
        except PermissionError:
            continue
    pytest.skip("no Python 3.11+ with venv that an unprivileged user may run: `apt-get install python3-venv` as root")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it (`python -m build`)."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


@pytest.fixture(scope="module")
def machine(dist: Path) -> Iterator[Machine]:
    """The image's build stage (wheels of the runtime lock) and final stage (a venv from them alone)."""
    with tempfile.TemporaryDirectory(prefix="todo-api-deploy-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # pytest's own temporary folders are closed to other users
        wheels = root / "wheels"
        wheel = map(str, dist.glob("*.whl"))
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), "-r", str(RUNTIME_LOCK), *wheel],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stdout + built.stderr
        (root / RUNTIME_LOCK.name).write_text(RUNTIME_LOCK.read_text())
        requirements = ["-r", str(root / RUNTIME_LOCK.name), "todo-api"]
        venv, home, elsewhere = root / "venv", root / "home", root / "elsewhere"
        for owned in (venv, home, elsewhere):
            owned.mkdir()
            if os.geteuid() == 0:
                os.chown(owned, NOBODY, NOBODY)
        fresh = Machine(venv, home, elsewhere)
        for command in (
            [python_for(fresh), "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheels), *requirements],
        ):
            result = fresh.run(*command, env=fresh.env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
            assert result.returncode == 0, result.stdout + result.stderr
        yield fresh


def test_the_wheel_built_from_the_sdist_carries_the_contract_and_the_migrations(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/openapi.yaml") for name in archive.getnames())
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {"todo_api/openapi.yaml", "migrations/script.py.mako", "migrations/env.py"} <= shipped
    packages = {name.split("/")[0] for name in shipped if ".dist-info/" not in name}
    assert packages == {"todo_api", "handlers", "persistence", "migrations"}  # no tests, bench or tools
    assert zipfile.ZipFile(wheel).read("todo_api/openapi.yaml") == (ROOT / "openapi.yaml").read_bytes()


def test_the_image_runs_as_a_user_without_privileges_and_never_migrates_on_start() -> None:
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    [user] = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert user not in {"root", "0"}
    assert re.search(r"^FROM python:3\.\d+-slim", final, re.MULTILINE)
    command = exec_form("CMD")
    assert command[:2] == ["todo-api", "serve"] and "--no-migrate" in command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "--port" not in command, "the port comes from $PORT, which platforms set"


def test_the_runtime_install_has_no_development_tools(machine: Machine) -> None:
    listed = machine.run(str(machine.venv / "bin" / "pip"), "list", "--format=json", env=machine.env())
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "todo-api" in installed
    assert not installed & DEVELOPMENT_TOOLS


@pytest.fixture
def network_url(empty_url: str) -> Iterator[str]:
    """`empty_url` over TCP, as a container reaches its database. A session database on a Unix socket
    in a folder only its owner may enter (the embedded server under root) is reached through PgBouncer."""
    if unprivileged() and make_url(empty_url).query.get("host"):
        with pooler.running(empty_url) as url:
            yield url
    else:
        yield empty_url


def test_migrate_then_serve_from_an_unrelated_folder_with_only_environment_variables(
    machine: Machine, empty_url: str, network_url: str
) -> None:
    checked = machine.run("todo-api", "check", env=machine.env(BETTER_AUTH_SECRET=SECRET))
    assert checked.returncode == 0, checked.stderr

    migrated = machine.run("todo-api", "migrate", env=machine.env(DATABASE_URL=network_url))
    assert migrated.returncode == 0, migrated.stderr
    assert schema.current(empty_url) == schema.head()

    port = str(free_port())
    env = machine.env(DATABASE_URL=network_url, BETTER_AUTH_SECRET=SECRET, PORT=port)
    service = LoggedProcess(
        exec_form("CMD"), log_prefix="todo-api-image-", env=env, cwd=machine.elsewhere, **unprivileged()
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(
            service.process, answers(base_url + "/ready"), name="the image's CMD", log=service.output, timeout=60
        )
        health = machine.run(*exec_form("HEALTHCHECK"), env=env, timeout=30)
        assert health.returncode == 0, health.stderr

        token = machine.run("todo-api", "token", "alice", "--email", "alice@example.com", env=env).stdout.strip()
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as alice:
            created = alice.post("/api/tasks", json={"title": "Ship it", "tags": ["release"]})
            assert created.status_code == 201, created.text
            task = created.json()
            assert alice.get("/api/tasks", params={"tag": "release"}).json() == [task]
            done = alice.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True})
            assert done.json()["completed"] is True
            assert alice.delete(f"/api/tasks/{task['id']}").status_code == 204
            assert_problem(alice.get(f"/api/tasks/{task['id']}"), 404)
            assert "swagger" in alice.get("/api/ui/").text.lower()
            assert alice.get("/api/openapi.json").json()["info"]["title"]
        assert "Traceback" not in service.output(), service.output()
    finally:
        service.stop()
