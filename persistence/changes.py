"""The change feed: what changed in a user's tasks after a number of their sequence.

Migration 0007 numbers every change of a user's tasks, in commit order (its docstring says why
that order holds). A task's row carries the number of its latest change, so reading "every task
whose number is above n, and every tombstone or reminder above n" gives each task once, in its
latest state; numbered in one sequence, the three kinds merge into one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from persistence.database import Database, Row
from persistence.tasks import NAMES

CHANNEL = "todo_api_feed"  # NOTIFY'd with the user's id by every write (migration 0007)

_FROM_LOG = ", ".join(
    "coalesce(snapshot.id, log.task_id) AS id" if name == "id" else f"snapshot.{name}" for name in NAMES
)
# One statement, so one snapshot: the head and the entries agree. Each branch stops at `limit`
# rows itself, through the (user_id, change_seq) and (user_id, seq) indexes.
_READ = f"""
SELECT head.seq AS head, head.floor AS floor, head.epoch AS epoch,
       coalesce(%(history)s, head.seq, 0) AS history, entry.*
FROM (SELECT %(user_id)s::text AS user_id) AS me
LEFT JOIN feed_heads AS head ON head.user_id = me.user_id
LEFT JOIN LATERAL (
    (SELECT change_seq AS seq, 'upsert' AS kind, NULL::boolean AS late, {", ".join(NAMES)}
     FROM tasks
     WHERE user_id = me.user_id AND change_seq > %(since)s
     ORDER BY change_seq LIMIT %(limit)s)
    UNION ALL
    (SELECT log.seq, log.kind, log.late, {_FROM_LOG}
     FROM feed_log AS log, jsonb_populate_record(NULL::tasks, log.task) AS snapshot
     WHERE log.user_id = me.user_id AND log.seq > greatest(%(since)s, coalesce(%(history)s, head.seq, 0))
     ORDER BY log.seq LIMIT %(limit)s)
    ORDER BY seq LIMIT %(limit)s
) AS entry ON true
ORDER BY entry.seq
"""

_HEAD = "SELECT seq, floor, epoch FROM feed_heads WHERE user_id = %(user_id)s"
_HEADS = "SELECT user_id, seq FROM feed_heads WHERE user_id = ANY(%(users)s)"


@dataclass(frozen=True, slots=True)
class Head:
    """A user's sequence: its newest number, the newest number purged from the log (a token
    below it may have missed a tombstone), and the epoch it started in (0: not started yet)."""

    seq: int = 0
    floor: int = 0
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    head: Head
    history: int  # the log (tombstones, reminders) was read after max(since, history)
    entries: list[Row]  # ordered by "seq"; "kind" is upsert, delete or reminder; a task's fields


async def read(db: Database, user_id: str, *, since: int, history: int | None, limit: int) -> Page:
    """Up to `limit` changes numbered above `since`, tasks by their latest state. The log is read
    after max(`since`, `history`); `history` None means the current head: a snapshot's first page,
    which skips the deletions and reminders that came before it."""
    params = {"user_id": user_id, "since": since, "history": history, "limit": limit}
    rows = await db.run(user_id, _READ, params)
    first = rows[0]
    head = Head(first["head"] or 0, first["floor"] or 0, first["epoch"] or 0)
    entries = [row for row in rows if row["seq"] is not None]
    return Page(head, first["history"], entries)


async def head(db: Database, user_id: str) -> Head:
    rows = await db.run(user_id, _HEAD, {"user_id": user_id})
    return Head(**rows[0]) if rows else Head()


async def heads(db: Database, user_ids: Sequence[str]) -> dict[str, int]:
    """The newest number of each of `user_ids` that has a sequence (no user's rows are read)."""
    rows = await db.run(None, _HEADS, {"users": list(user_ids)})
    return {row["user_id"]: row["seq"] for row in rows}
