"""What the tests share: the real service and its clients, tokens, the database clusters, poolers and
replicas they build, and the programs they need. Nothing here is a test, and no test imports another."""

from __future__ import annotations

import ssl
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Every field of a task as the API returns it: the contract's Task.
TASK = yaml.safe_load((ROOT / "openapi.yaml").read_text())["components"]["schemas"]["Task"]["properties"]
TASK_FIELDS = set(TASK)
SERVER_FIELDS = {name for name, field in TASK.items() if field.get("readOnly")}  # the server sets them
# One TLS context for every client: httpx otherwise builds one for each (reading the CA bundle, about
# 30 ms), and the tests make thousands of clients.
TLS = ssl.create_default_context()
