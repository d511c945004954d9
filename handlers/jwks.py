"""Better Auth's published signing keys (JWKS): fetched asynchronously, cached, refreshed on an
unknown `kid` at most once per interval, so that a flood of random `kid`s cannot become a flood
of fetches while a freshly rotated key is still accepted within seconds. Keys older than
MAX_AGE_SECONDS are refreshed in the background, so a key withdrawn from the JWKS stops working."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 3.0
MAX_AGE_SECONDS = 600
MAX_JWKS_BYTES = 256 * 1024
# Which algorithms each kind of key may verify (RFC 8725 §3.1): never HS*, never `none`.
ALGORITHMS_BY_KEY: dict[tuple[str, str | None], set[str]] = {
    ("OKP", "Ed25519"): {"EdDSA"},
    ("EC", "P-256"): {"ES256"},
    ("EC", "P-384"): {"ES384"},
    ("EC", "P-521"): {"ES512"},
    ("RSA", None): {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
}
ASYMMETRIC_ALGORITHMS = set().union(*ALGORITHMS_BY_KEY.values())


class KeysUnavailable(Exception):
    """No key could be had: the JWKS is unreachable (or has no usable key) and nothing is cached."""


class KeySet:
    """The keys at `url`, by `kid`."""

    def __init__(self, url: str, *, min_refresh_seconds: float) -> None:
        self.url = url
        self.min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, tuple[jwt.PyJWK, set[str]]] = {}  # kid -> key, algorithms it may verify
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def keys_for(self, kid: str | None, algorithm: str) -> list[jwt.PyJWK]:
        """Keys that may verify a token with this `kid` and `alg`; fetch when `kid` is unknown."""
        stale = time.monotonic() - self._fetched_at > MAX_AGE_SECONDS
        if stale and self._keys and (self._background is None or self._background.done()):
            self._background = asyncio.create_task(self._refresh())
        if not self._matching(kid, algorithm):
            await self._refresh()
            if not self._keys:
                raise KeysUnavailable(self.url)
        return self._matching(kid, algorithm)

    def _matching(self, kid: str | None, algorithm: str) -> list[jwt.PyJWK]:
        candidates = list(self._keys.values()) if kid is None else [self._keys[kid]] if kid in self._keys else []
        return [key for key, algorithms in candidates if algorithm in algorithms]

    async def _refresh(self) -> None:
        async with self._lock:  # concurrent misses share one fetch
            if time.monotonic() - self._fetched_at < self.min_refresh_seconds:
                return  # fetched moments ago, perhaps for the request we queued behind
            self._fetched_at = time.monotonic()
            try:
                # One deadline for the whole fetch: httpx's timeout applies per read, so a server
                # that drips bytes would otherwise hold every unknown-kid request for long.
                async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                    keys = await self._fetch()
            except httpx.HTTPStatusError as error:
                status = error.response.status_code
                if 400 <= status < 500:
                    # Not a transient: the URL is wrong (BETTER_AUTH_URL or JWT_JWKS_URL), say so loudly.
                    log.error("the JWKS URL %s answered %d: check BETTER_AUTH_URL or JWT_JWKS_URL", self.url, status)
                else:
                    log.warning("could not fetch the JWKS from %s: HTTP %d", self.url, status)
                return
            except (httpx.HTTPError, ValueError, TimeoutError, RecursionError) as error:
                log.warning("could not fetch the JWKS from %s: %s", self.url, type(error).__name__)
                return  # keep serving with the keys we have, if any
            self._keys = keys

    async def _fetch(self) -> dict[str, tuple[jwt.PyJWK, set[str]]]:
        body = bytearray()
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:  # stop reading: never hold more than this in memory
                    raise ValueError("JWKS too large")
        document = json.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWK set")
        keys: dict[str, tuple[jwt.PyJWK, set[str]]] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            algorithms = _allowed(entry)
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError, KeyError):
                continue  # a key type we do not use
            if algorithms:
                keys[str(entry.get("kid", len(keys)))] = (key, algorithms)
        return keys


def _allowed(entry: dict[str, Any]) -> set[str]:
    """The algorithms a published key may verify: its type's, narrowed to its `alg` if given."""
    kty: str | None = entry.get("kty")
    crv: str | None = entry.get("crv")
    published: str | None = entry.get("alg")
    if not all(isinstance(value, str | None) for value in (kty, crv, published, entry.get("use"))):
        return set()  # a malformed entry must not break the whole set
    if entry.get("use", "sig") != "sig":
        return set()  # an encryption key never verifies signatures (RFC 7517 §4.2)
    allowed = ALGORITHMS_BY_KEY.get((kty or "", crv if kty != "RSA" else None), set())
    return allowed & {published} if published else allowed
