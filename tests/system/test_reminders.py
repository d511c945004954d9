"""Reminders (SPEC "Recurring tasks and reminders"): at `remind_at` every live stream of the user
gets `event: reminder` with the task, exactly once whatever the number of processes; moving the
time re-arms it, completing or deleting the task disarms it, and one that fell due while no
service ran fires once on the next start, marked late.

Absence is proven with a later reminder: reminders fire in order of time, so by the time a
sentinel due after a disarmed reminder has arrived, the disarmed one would have too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from persistence import schema
from tests.support.service import Service, service_env
from tests.support.sync import Event, EventStream, Replica
from tests.support.users import User


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def reminders_until(stream: EventStream, sentinel: int, timeout: float = 30) -> list[Event]:
    """The reminders `stream` gets until (and with) the one for task `sentinel`."""
    got = []
    while True:
        event = stream.next(timeout=timeout)
        assert event is not None, "the stream ended"
        if event.type == "reminder":
            got.append(event)
            if event.data["task"]["id"] == sentinel:
                return got


def tasks_reminded(events: list[Event]) -> list[int]:
    return [event.data["task"]["id"] for event in events]


def test_a_reminder_reaches_streams_on_two_processes_exactly_once_each(
    alice: User, service: Service, start_service: Callable[..., Service]
) -> None:
    other = start_service()
    with EventStream(service.base_url, alice.token) as here, EventStream(other.base_url, alice.token) as there:
        due, due_clock = datetime.now(UTC) + timedelta(seconds=2), time.monotonic() + 2
        task = alice.create(title="Call mum", remind_at=due.isoformat())
        sentinel = alice.create(title="sentinel", remind_at=soon(3))
        for stream in (here, there):
            got = reminders_until(stream, sentinel["id"])
            assert tasks_reminded(got) == [task["id"], sentinel["id"]]
            reminder = got[0]
            assert reminder.data == {"type": "reminder", "task": task, "late": False}
            assert reminder.id  # a feed position: a reconnecting client resumes after it
            print(f"the reminder arrived {reminder.at - due_clock:.2f} s after its time")
    snapshot = [entry["type"] for page in Replica().follow(alice.http) for entry in page]
    assert set(snapshot) == {"upsert"}, "a snapshot does not replay the reminders that came before it"


def test_a_moved_reminder_fires_at_its_new_time_only(alice: User, service: Service) -> None:
    with EventStream(service.base_url, alice.token) as stream:
        earlier = alice.create(title="moved earlier", remind_at=soon(8))
        later = alice.create(title="moved later", remind_at=soon(4))
        new_time = datetime.now(UTC) + timedelta(seconds=6)
        assert alice.http.patch(f"/api/tasks/{earlier['id']}", json={"remind_at": soon(1)}).status_code == 200
        assert (
            alice.http.patch(f"/api/tasks/{later['id']}", json={"remind_at": new_time.isoformat()}).status_code == 200
        )
        sentinel = alice.create(title="sentinel", remind_at=soon(9))
        got = reminders_until(stream, sentinel["id"])
    assert tasks_reminded(got) == [earlier["id"], later["id"], sentinel["id"]]
    assert datetime.fromisoformat(got[1].data["task"]["remind_at"]) == new_time


def test_completing_or_deleting_a_task_disarms_its_reminder(alice: User, service: Service) -> None:
    with EventStream(service.base_url, alice.token) as stream:
        completed = alice.create(title="done before", remind_at=soon(2))
        deleted = alice.create(title="gone before", remind_at=soon(2))
        assert alice.http.patch(f"/api/tasks/{completed['id']}/complete").status_code == 200
        assert alice.http.delete(f"/api/tasks/{deleted['id']}").status_code == 204
        sentinel = alice.create(title="sentinel", remind_at=soon(3))
        assert tasks_reminded(reminders_until(stream, sentinel["id"])) == [sentinel["id"]]


def test_changing_the_due_date_or_the_time_rearms_a_fired_reminder(alice: User, service: Service) -> None:
    with EventStream(service.base_url, alice.token) as stream:
        task = alice.create(title="again", due_date="2030-01-01T10:00:00Z", remind_at=soon(1))
        assert tasks_reminded(reminders_until(stream, task["id"])) == [task["id"]]
        assert (
            alice.http.patch(f"/api/tasks/{task['id']}", json={"due_date": "2030-01-02T10:00:00Z"}).status_code == 200
        )
        again = reminders_until(stream, task["id"])
        assert tasks_reminded(again) == [task["id"]] and again[0].data["task"]["due_date"] == "2030-01-02T10:00:00Z"
        assert alice.http.patch(f"/api/tasks/{task['id']}", json={"title": "renamed"}).status_code == 200
        sentinel = alice.create(title="sentinel", remind_at=soon(1))
        assert tasks_reminded(reminders_until(stream, sentinel["id"])) == [sentinel["id"]]  # a rename is no re-arm


@pytest.fixture
def own_database(empty_url: str) -> str:
    """A database no other service of this session serves (none of them fires its reminders)."""
    schema.migrate(empty_url)
    return empty_url


def test_a_reminder_due_while_no_service_ran_fires_once_on_the_next_start_marked_late(own_database: str) -> None:
    env = service_env(own_database, REMINDER_LATE_SECONDS="1")
    first = Service(env)
    user = User(first.base_url)
    position = user.http.get("/api/tasks/changes").json()["next"]
    due = datetime.now(UTC) + timedelta(seconds=2)
    task = user.create(title="while away", remind_at=due.isoformat())
    first.stop()
    while datetime.now(UTC) < due + timedelta(seconds=2):  # it falls due, and then late, with no service
        time.sleep(0.1)
    with _stored(own_database) as connection:
        assert connection.scalar(text("SELECT count(*) FROM feed_log WHERE kind = 'reminder'")) == 0
    second = Service(env)
    try:
        with EventStream(second.base_url, user.token, **{"Last-Event-ID": position}) as stream:
            got = reminders_until(stream, task["id"])
        assert [event.data for event in got] == [{"type": "reminder", "task": task, "late": True}]
        with _stored(own_database) as connection:
            assert connection.scalar(text("SELECT count(*) FROM feed_log WHERE kind = 'reminder'")) == 1
    finally:
        second.stop()
        user.http.close()


@contextmanager
def _stored(url: str) -> Iterator[Any]:
    """A connection to `url` for the block (the test's own database is not the session's `db`)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()
