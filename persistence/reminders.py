"""Reminders that have fallen due: fired by migration 0008's `fire_due_reminders`, which says why
each fires exactly once however many processes and hosts call it at the same time."""

from __future__ import annotations

from persistence.database import Database

_FIRE = "SELECT owner FROM fire_due_reminders(%(batch)s, make_interval(secs => %(late_seconds)s))"


async def fire_due(db: Database, *, batch: int, late_seconds: int) -> list[str]:
    """Fire up to `batch` reminders that are due, oldest first (marked late when they fire more
    than `late_seconds` after their time); the owner of each one fired."""
    rows = await db.run(None, _FIRE, {"batch": batch, "late_seconds": late_seconds})
    return [row["owner"] for row in rows]
