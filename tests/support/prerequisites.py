"""Programs some tests need from the system (PgBouncer, Chromium, Node.js): one rule for all of them.

A program on PATH (or in /usr/sbin, where Debian puts daemons) is used as it is. When it is
missing and we run as root, its Debian package is installed with apt-get, as on CI; otherwise the
test is skipped with the package to install, which pytest's summary (`-ra`) lists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

import pytest

NODE_AT_LEAST = (20, 19)
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"


def program(name: str, package: str, *, installable: bool = True, why: str = "") -> str:
    """The path of the program `name` from the Debian package `package`. Installed with apt-get when
    missing, `installable` and running as root; else the calling test is skipped, naming the
    package and `why` (what else to know, e.g. a least version)."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found:
        return found
    if installable and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install(package)
        found = shutil.which(name, path=SEARCH_PATH)
        assert found, f"apt-get installed {package}, but it has no program {name}"
        return found
    how = ", or run the tests as root, which installs it" if installable else ""
    pytest.skip(f"{name} is not installed: install it with `apt-get install {package}` as root{why}{how}")


@cache
def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"apt-get install {package} failed:\n{result.stdout}\n{result.stderr}"


@cache
def node() -> str:
    """Node.js 20.19+, not installed by the tests: Debian 12's nodejs package is too old for them."""
    found = program("node", "nodejs", installable=False, why=" (Node.js 20.19 or newer, with npm)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if tuple(int(part) for part in version.lstrip("v").split(".")[:2]) < NODE_AT_LEAST:
        pytest.skip(f"Node.js {version} is too old: these tests need 20.19 or newer")
    return found


def npm() -> str:
    node()
    return program("npm", "npm", installable=False, why=" (with Node.js 20.19 or newer)")
