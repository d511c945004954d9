"""The topology scenario's clients of the change feed (tests/support/followers.py) notice what they must:
a change sent twice or out of order, an upsert that changes nothing, a reminder twice, and, at the
end, a task missed, held stale or held after its deletion, and a reminder that never arrived.
In process: no service, the audit's own arithmetic."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from handlers import cursors
from tests.support.followers import Holding, task_state

KEYS = cursors.keyring(["a secret of the scenario's, long enough to sign with"], cursors.CHANGE_TOKEN)
EPOCH = 1_700_000_000_000_000
DUE = datetime(2030, 1, 7, 8, 45, tzinfo=UTC)


def token(number: int, user: str = "alice") -> str:
    return cursors.encode(KEYS, [EPOCH, number, int(time.time())], user_id=user, query={})


def task(task_id: int, title: str = "Call mum", **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id, "title": title, "description": None, "completed": False, "priority": "medium", "tags": [],
        "due_date": None, "remind_at": None, "updated_at": "2030-01-07T08:00:00.000001Z", **fields,
    }  # fmt: skip


def receive(holding: Holding, number: int, entry: dict[str, Any]) -> None:
    holding.advance(token(number), strictly=True)
    holding.apply(entry)


def test_changes_received_once_and_in_order_are_clean() -> None:
    holding = Holding("alice", KEYS)
    receive(holding, 1, {"type": "upsert", "task": task(1)})
    receive(holding, 2, {"type": "upsert", "task": task(1, "Call dad")})
    receive(holding, 3, {"type": "reminder", "task": task(2, remind_at=DUE.isoformat()), "late": False})
    receive(holding, 4, {"type": "delete", "id": 1})
    assert (holding.changes, holding.duplicated, holding.problems) == (4, 0, [])
    assert holding.missed({}, [(2, DUE)]) == 0


def test_an_event_sent_again_or_out_of_order_and_an_upsert_that_changes_nothing_are_duplicates() -> None:
    holding = Holding("alice", KEYS)
    receive(holding, 2, {"type": "upsert", "task": task(1)})
    receive(holding, 2, {"type": "upsert", "task": task(1, "renamed")})  # the same position again
    receive(holding, 1, {"type": "upsert", "task": task(3)})  # behind the last one
    receive(holding, 4, {"type": "upsert", "task": task(3)})  # nothing new
    reminder = {"type": "reminder", "task": task(2, remind_at=DUE.isoformat()), "late": False}
    receive(holding, 5, reminder)
    receive(holding, 6, reminder)
    assert holding.duplicated == 4


def test_a_feed_page_may_repeat_its_position_but_never_go_back() -> None:
    holding = Holding("alice", KEYS)
    holding.advance(token(3), strictly=False)
    holding.advance(token(3), strictly=False)  # nothing changed between two polls
    assert holding.duplicated == 0
    holding.advance(token(2), strictly=False)
    assert holding.duplicated == 1


def test_another_users_token_is_a_problem_not_a_position() -> None:
    holding = Holding("alice", KEYS)
    holding.advance(token(1, user="bob"), strictly=True)
    assert holding.token is None and "not the user's feed token" in holding.problems[0]


def test_missed_counts_tasks_absent_stale_or_deleted_and_reminders_never_received() -> None:
    holding = Holding("alice", KEYS)
    for number, entry in enumerate([task(1), task(2), task(4)], start=1):
        receive(holding, number, {"type": "upsert", "task": entry})
    stored = {
        1: task_state(task(1)),  # as held
        2: task_state(task(2, completed=True)),  # held stale
        3: task_state(task(3)),  # never received
    }  # task 4 is held but deleted
    assert holding.missed(stored, [(5, DUE)]) == 4
