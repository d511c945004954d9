"""Schemathesis hooks for tests/system/test_contract.py (named by schemathesis.toml)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

_VALID_KEY = re.compile(r"[!-~]{1,200}")


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Make valid Idempotency-Keys unique, as real clients do (a UUID per logical request).

    Hypothesis favours short values such as "0", so unrelated generated requests would share a
    key — which the API rightly answers as a retry of the first one. Invalid keys are left alone
    so that their rejection is still checked.
    """
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and _VALID_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = f"{key}-{uuid.uuid4()}"
