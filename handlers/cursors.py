"""Opaque keyset cursors, signed so that they only work for their user, filters and sort."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from handlers.problems import BadRequest

_DIGEST_BYTES = 16


def signing_key(secret: str) -> bytes:
    """The cursors' key, derived from the server secret (never used directly as a MAC key)."""
    return hmac.new(secret.encode(), b"todo-api list cursor v1", hashlib.sha256).digest()


def encode(key: bytes, position: list[Any], *, user_id: str, query: dict[str, Any]) -> str:
    payload = orjson.dumps(position)
    return base64.urlsafe_b64encode(_mac(key, payload, user_id, query) + payload).decode().rstrip("=")


def decode(key: bytes, cursor: str, *, user_id: str, query: dict[str, Any]) -> list[Any]:
    """The position in `cursor`; 400 when it was made for another user, query or by someone else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest("the cursor is not valid") from None
    mac, payload = raw[:_DIGEST_BYTES], raw[_DIGEST_BYTES:]
    if len(mac) != _DIGEST_BYTES or not hmac.compare_digest(mac, _mac(key, payload, user_id, query)):
        raise BadRequest("the cursor is not valid for this user, filters and sort")
    position: list[Any] = orjson.loads(payload)
    return position


def _mac(key: bytes, payload: bytes, user_id: str, query: dict[str, Any]) -> bytes:
    bound = orjson.dumps([user_id, query], option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, bound + b"\0" + payload, hashlib.sha256).digest()[:_DIGEST_BYTES]
