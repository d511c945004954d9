"""Secrets as lists, in process: Better Auth's BETTER_AUTH_SECRETS format, and keys where the newest
signs and every one verifies (what lets tests/system/test_rotation.py rotate under load)."""

from __future__ import annotations

import pytest

from handlers import cursors
from handlers.signing import Keyring
from todo_api.settings import ConfigError, load

# Random-looking: the cursor secrets must be beyond a guesser's reach (tests/system/test_cli.py).
CURRENT, PREVIOUS, LEGACY = (
    "Current-Q7v2Lm9xK4pR8tW1nZ6bY3cH5j",
    "Previous-G8s1Fd4qN7wE2rU9yT6iO3pA0k",
    "Legacy-M3z8Xc1Vb6Nq9Wr4Ty7Ui2Op5As",
)


def test_better_auth_secrets_are_read_as_better_auth_writes_them_with_the_legacy_secret_last() -> None:
    settings = load({"BETTER_AUTH_SECRETS": f"2: {CURRENT} ,1:{PREVIOUS}", "BETTER_AUTH_SECRET": LEGACY})
    assert settings.better_auth_secret == CURRENT  # what `todo-api token` signs with
    assert settings.auth_secrets == (CURRENT, PREVIOUS, LEGACY)
    assert load({"BETTER_AUTH_SECRETS": f"2:{CURRENT}", "BETTER_AUTH_SECRET": CURRENT}).auth_secrets == (CURRENT,)


def test_cursor_secrets_stand_apart_from_the_shared_secrets_when_set() -> None:
    apart = load({"BETTER_AUTH_SECRET": LEGACY, "CURSOR_SECRETS": f"7:{CURRENT},6:{PREVIOUS}"})
    assert apart.cursor_secrets == (CURRENT, PREVIOUS)
    assert load({"BETTER_AUTH_SECRETS": f"2:{CURRENT},1:{PREVIOUS}"}).cursor_secrets == (CURRENT, PREVIOUS)
    assert load({"CURSOR_SECRET": LEGACY}).cursor_secrets == (LEGACY,)


@pytest.mark.parametrize("value", [CURRENT, f"x:{CURRENT}", f"1:{CURRENT},1:{PREVIOUS}", "1:short"])
def test_a_malformed_list_is_refused_without_showing_a_secret(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^BETTER_AUTH_SECRETS") as refused:
        load({"BETTER_AUTH_SECRETS": value})
    assert CURRENT not in str(refused.value) and PREVIOUS not in str(refused.value)


def test_the_newest_key_signs_and_every_key_verifies() -> None:
    old, rotated = Keyring.derive([PREVIOUS], b"purpose"), Keyring.derive([CURRENT, PREVIOUS], b"purpose")
    signed_before = old.sign(b"message")
    assert rotated.verify(signed_before, b"message")
    assert rotated.sign(b"message") != signed_before
    assert not old.verify(rotated.sign(b"message"), b"message")
    assert not rotated.verify(signed_before, b"another message")
    assert not rotated.verify(b"", b"message")
    assert not Keyring.derive([CURRENT, PREVIOUS], b"another purpose").verify(signed_before, b"message")


def test_a_cursor_signed_before_a_rotation_still_leads_to_the_next_page() -> None:
    position = ["2030-01-01T00:00:00Z", 41]
    cursor = cursors.encode(cursors.keyring([PREVIOUS]), position, user_id="alice", query={"sort": "-created_at"})
    rotated = cursors.keyring([CURRENT, PREVIOUS])
    assert cursors.decode(rotated, cursor, user_id="alice", query={"sort": "-created_at"}) == position
