"""Opaque keyset cursors, signed so that they only work for their user, filters and sort; the
change feed's tokens are made the same way, with a key of their own."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import orjson

from handlers.problems import BadRequest
from handlers.signing import Keyring

PURPOSE = b"todo-api list cursor v1"
CHANGE_TOKEN = b"todo-api change token v1"  # the change feed's tokens


def keyring(secrets: Sequence[str], purpose: bytes = PURPOSE) -> Keyring:
    """The keys for `purpose` (list cursors by default), from the cursor secrets (the newest first)."""
    return Keyring.derive(secrets, purpose)


def encode(keys: Keyring, position: list[Any], *, user_id: str, query: dict[str, Any]) -> str:
    payload = orjson.dumps(position)
    return base64.urlsafe_b64encode(keys.sign(_bound(payload, user_id, query)) + payload).decode().rstrip("=")


def decode(
    keys: Keyring, cursor: str, *, user_id: str, query: dict[str, Any], what: str = "the cursor", bound: str = ""
) -> list[Any]:
    """The position in `cursor`; 400 when it was made for another user, query or by someone else.
    `what` names it in the problem's detail, `bound` what it is bound to (default: the list's)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid") from None
    mac, payload = raw[: keys.digest_bytes], raw[keys.digest_bytes :]
    if not keys.verify(mac, _bound(payload, user_id, query)):
        raise BadRequest(f"{what} is not valid for {bound or 'this user, filters and sort'}")
    position: list[Any] = orjson.loads(payload)
    return position


def _bound(payload: bytes, user_id: str, query: dict[str, Any]) -> bytes:
    return orjson.dumps([user_id, query], option=orjson.OPT_SORT_KEYS) + b"\0" + payload
