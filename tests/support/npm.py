"""Node packages for the tests that drive Node code: installed from their package-lock.json on demand."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import ROOT, prerequisites

CLIENT = ROOT / "clients" / "typescript"  # the TypeScript client package


def install(folder: Path) -> None:
    """`npm ci` in `folder` unless its node_modules already matches its package-lock.json; the calling
    test is skipped when Node.js and npm are missing."""
    npm = prerequisites.npm()
    installed = folder / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= (folder / "package-lock.json").stat().st_mtime:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"npm ci in {folder} failed:\n{result.stdout}\n{result.stderr}"


def run(folder: Path, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """`npm run ARGS` in `folder` with extra environment; output captured."""
    return npm(folder, "run", "--silent", *args, timeout=timeout, **env)


def npm(folder: Path, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """`npm ARGS` in `folder` with extra environment; output captured."""
    return subprocess.run(
        [prerequisites.npm(), *args],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
