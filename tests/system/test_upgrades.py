"""Upgrades: every migration expands (adds what the previous release ignores) before a later one
contracts, so the previous release keeps serving on the new schema while the two run side by side
during a rolling deploy (docs/operations.md, Upgrades).

The previous commit (HEAD's first parent: on main, the release before this change) runs from git,
as its own code, against a database migrated by this one, beside this commit's service: each reads
and changes what the other wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from persistence import schema
from tests.support import ROOT
from tests.support.problems import assert_problem
from tests.support.processes import LoggedProcess, answers, free_port, wait_until_up
from tests.support.service import Service, service_env
from tests.support.tokens import mint


def previous_release(folder: Path) -> str:
    """HEAD~1's tree extracted into `folder`; its commit. Skips where no history is at hand."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD~1^{commit}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    except FileNotFoundError:
        pytest.skip("git is not installed: `apt-get install git`; the previous release comes from the history")
    if not commit:
        pytest.skip("no previous commit in this checkout (a shallow clone?): fetch its history to test upgrades")
    archive = folder / "previous.tar"
    with archive.open("wb") as output:
        subprocess.run(["git", "archive", commit], cwd=ROOT, stdout=output, check=True, timeout=120)
    with tarfile.open(archive) as tree:
        tree.extractall(folder / "tree", filter="data")
    return commit


class PreviousService(LoggedProcess):
    """`todo-api serve --no-migrate` of the previous release: its own packages first on the path."""

    def __init__(self, tree: Path, env: dict[str, str]) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        env = {**env, "PYTHONPATH": str(tree)}
        command = [sys.executable, "-m", "todo_api.cli", "serve", "--no-migrate", "--port", str(port)]
        super().__init__(command, log_prefix="todo-api-previous-", env=env, cwd=tree)
        try:
            wait_until_up(
                self.process,
                answers(self.base_url + "/health"),
                name="the previous release",
                log=self.output,
                timeout=60,
            )
        except RuntimeError:
            self.stop()
            raise


@pytest.fixture(scope="module")
def previous_tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="todo-api-previous-") as folder:
        previous_release(Path(folder))
        yield Path(folder) / "tree"


def test_the_previous_release_serves_on_the_head_schema_beside_this_one(previous_tree: Path, empty_url: str) -> None:
    schema.migrate(empty_url)  # what this release's `todo-api migrate` job does before it rolls out
    env = service_env(empty_url)
    previous, current = PreviousService(previous_tree, env), Service(env)
    try:
        user = f"upgrade-{os.getpid()}"
        headers = {"Authorization": f"Bearer {mint(user)}"}
        with (
            httpx.Client(base_url=previous.base_url, headers=headers, timeout=30) as old,
            httpx.Client(base_url=current.base_url, headers=headers, timeout=30) as new,
        ):
            assert old.get("/ready").status_code == 200, old.get("/ready").text

            # A short CRUD session on the previous release.
            created = old.post("/api/tasks", json={"title": "Written by the old release", "description": "d"})
            assert created.status_code == 201, created.text
            task = created.json()
            assert [found["id"] for found in old.get("/api/tasks").json()] == [task["id"]]
            renamed = old.patch(f"/api/tasks/{task['id']}", json={"title": "Renamed by the old release"})
            assert renamed.status_code == 200, renamed.text
            assert old.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True}).json()["completed"]

            # Side by side: each release reads and changes what the other wrote.
            assert new.get(f"/api/tasks/{task['id']}").json()["title"] == "Renamed by the old release"
            fresh = new.post("/api/tasks", json={"title": "Written by the new release", "tags": ["upgrade"]})
            assert fresh.status_code == 201, fresh.text
            from_new = fresh.json()
            seen_by_old = old.get(f"/api/tasks/{from_new['id']}")
            assert seen_by_old.status_code == 200, seen_by_old.text
            assert seen_by_old.json()["title"] == from_new["title"]
            assert old.patch(f"/api/tasks/{from_new['id']}", json={"title": "Changed by the old"}).status_code == 200
            assert new.get(f"/api/tasks/{from_new['id']}").json()["title"] == "Changed by the old"
            assert {found["id"] for found in old.get("/api/tasks").json()} == {task["id"], from_new["id"]}

            assert old.delete(f"/api/tasks/{from_new['id']}").status_code == 204
            assert new.delete(f"/api/tasks/{task['id']}").status_code == 204
            assert_problem(old.get(f"/api/tasks/{task['id']}"), 404)
            assert new.get("/api/tasks").json() == []
        for service in (previous, current):
            assert "Traceback" not in service.output(), service.output()
    finally:
        previous.stop()
        current.stop()


def test_a_release_stays_ready_on_a_schema_a_newer_release_migrated_but_not_on_an_older_one(empty_url: str) -> None:
    schema.migrate(empty_url)
    engine = create_engine(empty_url)
    service = Service(service_env(empty_url))
    try:
        for revision, status in [("9999_from_a_newer_release", 200), (max(schema.known() - {schema.head()}), 503)]:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})
            assert httpx.get(service.base_url + "/ready", timeout=10).status_code == status, revision
    finally:
        service.stop()
        engine.dispose()
