"""The README's first session works exactly as written, against the real service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, prerequisites
from tests.support.service import Service
from tests.support.tokens import SECRET


def _first_session() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A first session") :]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]


def test_the_readme_curl_session_runs_as_written(service: Service) -> None:
    prerequisites.program("curl", "curl")
    script = _first_session()
    script = script.replace("http://127.0.0.1:8000", service.base_url)
    script = script.replace(".venv/bin/todo-api", str(Path(sys.executable).with_name("todo-api")))
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["BETTER_AUTH_SECRET"] = SECRET
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    listed, completed, revalidated, renamed, deleted = result.stdout.splitlines()
    assert [task["title"] for task in json.loads(listed)][:1] == ["Buy milk"]
    assert json.loads(completed)["completed"] is True
    assert revalidated == "304"
    assert json.loads(renamed)["title"] == "Buy oat milk"
    assert deleted == "204"
