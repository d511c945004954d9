"""The bearer token `todo-api mcp` sends: fixed (TODO_API_TOKEN), or fetched by a command
(TODO_API_TOKEN_COMMAND) whenever it is missing, near its expiry or refused, as kubectl's
credential plugins do, so a desktop assistant keeps working past one token's life."""

from __future__ import annotations

import json
import time
from typing import Protocol

import anyio
import jwt

REFRESH_BEFORE_SECONDS = 60
COMMAND_TIMEOUT_SECONDS = 30


class CredentialError(Exception):
    """No token could be had; the message is one line a person can act on."""


class Credentials(Protocol):
    """Where a tool call's `Authorization` comes from."""

    refreshable: bool  # whether asking again after a 401 can give another token

    async def authorization(self, *, refresh: bool = False) -> str: ...


class FixedToken:
    """One token, sent as it is until it expires."""

    refreshable = False

    def __init__(self, token: str) -> None:
        self._token = token

    async def authorization(self, *, refresh: bool = False) -> str:
        return f"Bearer {self._token}"


class TokenCommand:
    """Runs `command` through the shell for a token: its output is the token, or JSON with a
    `token` field (what Better Auth's `GET /api/auth/token` answers)."""

    refreshable = True

    def __init__(self, command: str, token: str | None = None) -> None:
        self._command = command
        self._token = token
        self._lock = anyio.Lock()

    async def authorization(self, *, refresh: bool = False) -> str:
        async with self._lock:  # concurrent calls share one run of the command
            if refresh or self._token is None or _expires_soon(self._token):
                self._token = await self._run()
            return f"Bearer {self._token}"

    async def _run(self) -> str:
        try:
            with anyio.fail_after(COMMAND_TIMEOUT_SECONDS):
                result = await anyio.run_process(self._command, check=False)
        except TimeoutError:
            raise CredentialError(f"TODO_API_TOKEN_COMMAND gave no token within {COMMAND_TIMEOUT_SECONDS} s") from None
        if result.returncode != 0:
            # Its output is not repeated: it may hold a secret. Run it in a shell to see why.
            raise CredentialError(f"TODO_API_TOKEN_COMMAND failed with exit status {result.returncode}")
        output = result.stdout.decode(errors="replace").strip()
        try:
            answer = json.loads(output)
        except ValueError:
            answer = output
        token = answer.get("token") if isinstance(answer, dict) else answer
        if not isinstance(token, str) or not token or any(character.isspace() for character in token):
            raise CredentialError("TODO_API_TOKEN_COMMAND printed neither a token nor JSON with a `token` field")
        return token


def _expires_soon(token: str) -> bool:
    """Whether the token's `exp` (read, not verified: the API verifies) is near; a token without one
    is used until refused."""
    try:
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return False
    return isinstance(expires, int | float) and expires - time.time() < REFRESH_BEFORE_SECONDS
