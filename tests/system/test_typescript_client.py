"""The TypeScript client a frontend gets from the contract (clients/typescript): its generated types
are those of today's openapi.yaml, it type-checks, its calls work against the live service, and
it is a package: versioned with the contract, packed by `npm pack`, and usable from a fresh
project under tsc and Node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, prerequisites
from tests.support.npm import CLIENT, install, npm, run
from tests.support.service import Service
from tests.support.users import User

PACKAGE = json.loads((CLIENT / "package.json").read_text())


def readme_example() -> str:
    """docs/frontend.md's TypeScript example, as a frontend developer would paste it."""
    readme = (ROOT / "docs" / "frontend.md").read_text()
    section = readme[readme.index("## TypeScript client") :]
    return re.search(r"```ts\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]


def node(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`node ARGS` in `folder` with extra environment; output captured."""
    command = [prerequisites.node(), *args]
    return subprocess.run(command, cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def client() -> Path:
    install(CLIENT)
    return CLIENT


@pytest.fixture(scope="module")
def packed(client: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What `npm pack` made of the client (its `prepack` script builds dist/): npm's report, and `tarball`."""
    destination = tmp_path_factory.mktemp("pack")
    result = npm(client, "pack", "--json", "--pack-destination", str(destination))
    assert result.returncode == 0, result.stdout + result.stderr
    [report] = json.loads(result.stdout)
    return {**report, "tarball": destination / report["filename"]}


def test_the_committed_types_are_generated_from_the_current_contract(client: Path) -> None:
    result = run(client, "check:schema")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_type_checks(client: Path) -> None:
    result = run(client, "typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_works_against_the_live_service(client: Path, service: Service, alice: User) -> None:
    result = run(client, "test", BASE_URL=service.base_url, TOKEN=alice.token)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"^(?:#|ℹ) pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^(?:#|ℹ) fail (\d+)$", output, re.MULTILINE)
    assert passed and int(passed[1]) > 0, output
    assert failed and int(failed[1]) == 0, output


def test_the_package_is_versioned_with_the_contract() -> None:
    contract = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    lock = json.loads((CLIENT / "package-lock.json").read_text())
    assert PACKAGE["version"] == contract["info"]["version"]
    assert lock["version"] == lock["packages"][""]["version"] == PACKAGE["version"]


def test_the_packed_package_ships_its_esm_build_and_declarations(packed: dict[str, Any]) -> None:
    assert packed["name"] == PACKAGE["name"] and packed["version"] == PACKAGE["version"]
    shipped = {file["path"] for file in packed["files"]}
    assert {"package.json", "dist/index.js", "dist/index.d.ts", "dist/tasks.js", "dist/schema.d.ts"} <= shipped
    assert all(path.startswith("dist/") or "/" not in path for path in shipped), shipped
    assert PACKAGE["exports"]["."] == {"types": "./dist/index.d.ts", "default": "./dist/index.js"}
    assert "openapi-fetch" in PACKAGE["dependencies"], "dependents must get openapi-fetch with the client"
    with tarfile.open(packed["tarball"]) as tarball:
        shipped_manifest = json.load(tarball.extractfile("package/package.json"))  # type: ignore[arg-type]
    install_time = {"preinstall", "install", "postinstall", "prepare"} & set(shipped_manifest.get("scripts", {}))
    assert not install_time, f"installing the tarball would run {install_time}"


def test_publishing_is_clean(client: Path, tmp_path: Path) -> None:
    """`npm publish --dry-run` warns about nothing (a registry token stands in for a login)."""
    userconfig = tmp_path / "npmrc"
    userconfig.write_text("//registry.npmjs.org/:_authToken=dry-run-only\n")
    published = npm(client, "publish", "--dry-run", "--userconfig", str(userconfig))
    assert published.returncode == 0, published.stdout + published.stderr
    warnings = [line for line in published.stderr.splitlines() if line.startswith("npm warn")]
    assert not warnings, warnings


def test_the_tarball_is_ignored_by_git(client: Path) -> None:
    tarballs = [f"{PACKAGE['name']}-{PACKAGE['version']}.tgz", f"clients/typescript/{PACKAGE['name']}-1.2.3.tgz"]
    ignored = subprocess.run(["git", "check-ignore", *tarballs], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ignored.stdout.splitlines() == tarballs, ignored.stderr


def test_a_fresh_project_installs_the_tarball_type_checks_and_runs_against_the_service(
    packed: dict[str, Any], service: Service, alice: User, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    shutil.copy(CLIENT / "example" / "app.ts", app / "src" / "app.ts")
    (app / "src" / "readme.ts").write_text(readme_example())  # type-checked as pasted
    (app / "package.json").write_text(json.dumps({"name": "todo-app", "private": True, "type": "module"}))
    # tsc and Node's types are the client's own dev dependencies, so that only the tarball and what
    # it depends on are installed here.
    compiler_options = {
        "target": "ES2022",
        "module": "NodeNext",
        "strict": True,
        "outDir": "out",
        "typeRoots": [str(CLIENT / "node_modules" / "@types")],
        "types": ["node"],
    }
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": compiler_options, "include": ["src"]}))

    installed = npm(app, "install", "--no-audit", "--no-fund", "--prefer-offline", str(packed["tarball"]))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (app / "node_modules" / "openapi-fetch" / "package.json").exists(), "openapi-fetch came along"

    compiled = node(app, str(CLIENT / "node_modules" / "typescript" / "bin" / "tsc"), "-p", ".")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    ran = node(app, "out/app.js", BASE_URL=service.base_url, TOKEN=alice.token)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    seen = json.loads(ran.stdout)
    created = seen["created"]
    assert created["user_id"] == alice.id and created["title"] == "Buy milk" and created["tags"] == ["shopping"]
    assert seen["listed"] == [created["id"]]
    assert seen["completed"] is True
    assert seen["renamed"] == "Buy oat milk"
    assert seen["stale"] == 412
    assert seen["invalid"] == {"status": 422, "fields": ["title"]}
    assert seen["gone"] == 404
    assert seen["asked"] == [False, True], "the provider is asked once, and again once after the 401"
    assert "without /api" in seen["misplaced"]
    assert alice.http.get(f"/api/tasks/{created['id']}").status_code == 404
    assert alice.http.get("/api/tasks").json() == []
