"""Keys for what the service signs and later takes back (list cursors; any token of its own): the
newest key signs, every key verifies, so a secret is rotated without refusing what the one before
it signed. Keys are derived from the configured secrets per purpose, never used as they are."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[bytes, ...]  # the newest first
    digest_bytes: int = 16

    @classmethod
    def derive(cls, secrets: Sequence[str], purpose: bytes, *, digest_bytes: int = 16) -> Keyring:
        """One key per secret (the newest first), each HMAC(secret, purpose): a key for another purpose
        from the same secrets is unrelated to these."""
        if not secrets:
            raise ValueError("a keyring needs at least one secret")
        keys = tuple(hmac.new(secret.encode(), purpose, hashlib.sha256).digest() for secret in secrets)
        return cls(keys, digest_bytes)

    def sign(self, message: bytes) -> bytes:
        """`message`'s MAC under the newest key."""
        return self._mac(self.keys[0], message)

    def verify(self, mac: bytes, message: bytes) -> bool:
        """Whether any key made `mac` for `message`."""
        return len(mac) == self.digest_bytes and any(
            hmac.compare_digest(mac, self._mac(key, message)) for key in self.keys
        )

    def _mac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()[: self.digest_bytes]
