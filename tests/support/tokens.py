"""Tokens as Better Auth's shared-secret JWTs: signed with the tests' secret, or forged."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "tests-Qk8vN2xR7pL4mZ9wB3cF6hJ1dT5yG0sE"  # strong enough for the start-up check


def mint(subject: Any = None, *, secret: str = SECRET, algorithm: str = "HS256", ttl: int = 600, **claims: Any) -> str:
    """A token for `subject` (left out when None), signed like Better Auth's shared-secret tokens."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + ttl, **claims}
    if subject is not None:
        payload["sub"] = subject
    return jwt.encode({k: v for k, v in payload.items() if v is not ...}, secret, algorithm=algorithm)


def claims(subject: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": subject, "iat": now, "exp": now + 600, **extra}
