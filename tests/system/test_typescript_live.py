"""The TypeScript client's `changes()` and `subscribe()` (clients/typescript/src/live.ts) against the
live service, through real connections that a proxy cuts, silences and answers 503 on: the snapshot
then each change, resuming with Last-Event-ID after a drop with nothing missed or repeated,
reconnecting at once with a fresh token after `event: expired`, 410 surfaced to the application,
400/401 stopping it. The tests themselves are clients/typescript/test/{sse,live}.test.ts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from handlers import cursors
from tests.support.npm import CLIENT, install, run
from tests.support.service import Service
from tests.support.sync import CHANGE_KEYS, Replica, token_payload
from tests.support.tokens import SECRET
from tests.support.users import User


@pytest.fixture(scope="module")
def live(start_module_service: Callable[..., Service]) -> Service:
    """A service whose streams send a comment every second, so that a silent connection shows fast."""
    return start_module_service(STREAM_HEARTBEAT_SECONDS="1")


def test_subscribe_follows_the_service_through_drops_expiry_and_410(live: Service) -> None:
    install(CLIENT)
    gone = User(live.base_url)
    gone.create(title="before the token aged")
    replica = Replica()
    replica.follow(gone.http)
    epoch, seq, _issued = token_payload(replica.token or "")
    aged = cursors.encode(CHANGE_KEYS, [epoch, seq, int(time.time()) - 31 * 86400], user_id=gone.id, query={})
    gone.http.close()

    result = run(
        CLIENT, "test:live", timeout=300, BASE_URL=live.base_url, SECRET=SECRET, GONE_USER=gone.id, GONE_SINCE=aged
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"^(?:#|ℹ) pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^(?:#|ℹ) fail (\d+)$", output, re.MULTILINE)
    assert passed and int(passed[1]) >= 13, output
    assert failed and int(failed[1]) == 0, output
