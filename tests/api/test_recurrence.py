"""Recurring tasks (SPEC "Recurring tasks and reminders"): completing an occurrence creates the next
one — on the rule's calendar, on the wall clock of the task's time zone, once whatever the
retries, toggles and concurrent requests — and invalid rules, zones and rules without a due date
are 422s naming what is wrong."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.sync import Replica, server_tasks
from tests.support.users import User, task_count

NEXT = 'rel="next-occurrence"'


def complete(user: User, task: dict[str, Any], path: str = "/api/tasks/{id}/complete", **body: Any) -> httpx.Response:
    response = user.http.patch(path.format(id=task["id"]), json=body or None)
    assert response.status_code == 200, response.text
    return response


def following(user: User, response: httpx.Response) -> dict[str, Any] | None:
    """The next occurrence a completing answer names, or None."""
    link = response.headers.get("link")
    if link is None:
        return None
    assert link.endswith(NEXT), link
    found = user.http.get(link[1 : link.index(">")])
    assert found.status_code == 200, found.text
    return found.json()


def due_dates(user: User, first: dict[str, Any], steps: int) -> list[str]:
    """The due dates of `first` and the occurrences completing each in turn creates."""
    dates, task = [first["due_date"]], first
    for _ in range(steps):
        task = following(user, complete(user, task))  # type: ignore[assignment]
        if task is None:
            break
        dates.append(task["due_date"])
    return dates


def test_completing_a_daily_task_creates_the_next_with_the_same_fields(alice: User) -> None:
    first = alice.create(
        title="Water the plants",
        description="the ficus too",
        priority="high",
        tags=["home"],
        due_date="2030-01-01T18:00:00Z",
        remind_at="2030-01-01T17:30:00Z",
        recurrence="RRULE:FREQ=DAILY",
    )
    assert (first["recurrence"], first["time_zone"]) == ("FREQ=DAILY", "UTC")
    answer = complete(alice, first)
    assert answer.json()["status"] == "complete"
    second = following(alice, answer)
    assert second is not None and second["id"] != first["id"]
    same = ("title", "description", "priority", "tags", "recurrence", "time_zone")
    assert {name: second[name] for name in same} == {name: first[name] for name in same}
    assert (second["due_date"], second["remind_at"]) == ("2030-01-02T18:00:00Z", "2030-01-02T17:30:00Z")
    assert second["completed"] is False


def test_a_weekly_meeting_stays_at_9_in_berlin_across_the_march_clock_change(alice: User) -> None:
    meeting = alice.create(
        title="Team meeting",
        due_date="2030-03-25T09:00:00+01:00",
        recurrence="FREQ=WEEKLY;BYDAY=MO",
        time_zone="Europe/Berlin",
        remind_at="2030-03-25T08:45:00+01:00",
    )
    # Clocks go forward on Sunday 31 March 2030: 09:00 in Berlin is 08:00Z before, 07:00Z after.
    assert due_dates(alice, meeting, 2) == ["2030-03-25T08:00:00Z", "2030-04-01T07:00:00Z", "2030-04-08T07:00:00Z"]


@pytest.mark.parametrize(
    ("rule", "first", "expected"),
    [
        # The 31st: months without one are skipped (RFC 5545), not moved to their last day.
        (
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "2030-01-31T10:00:00Z",
            ["2030-01-31", "2030-03-31", "2030-05-31", "2030-07-31", "2030-08-31"],
        ),
        # The last weekday of each month.
        (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "2030-01-31T10:00:00Z",
            ["2030-01-31", "2030-02-28", "2030-03-29", "2030-04-30", "2030-05-31"],
        ),
        # COUNT counts the whole series: two occurrences, then none.
        ("FREQ=DAILY;COUNT=2", "2030-01-01T10:00:00Z", ["2030-01-01", "2030-01-02"]),
        # UNTIL (a date: its whole day) ends it.
        ("FREQ=WEEKLY;UNTIL=20300115", "2030-01-01T10:00:00Z", ["2030-01-01", "2030-01-08", "2030-01-15"]),
        (
            "FREQ=YEARLY;INTERVAL=2",
            "2030-02-01T10:00:00Z",
            ["2030-02-01", "2032-02-01", "2034-02-01", "2036-02-01", "2038-02-01"],
        ),
    ],
)
def test_the_rules_calendar(alice: User, rule: str, first: str, expected: list[str]) -> None:
    task = alice.create(title=rule, due_date=first, recurrence=rule)
    assert [date[:10] for date in due_dates(alice, task, 4)] == expected


def test_completing_again_retrying_toggling_or_uncompleting_makes_no_second_next(alice: User, db: Engine) -> None:
    task = alice.create(title="once", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
    first = complete(alice, task)
    created = following(alice, first)
    assert created is not None
    retried = complete(alice, task, completed=True)  # a retry: still complete, the same next one named
    assert following(alice, retried) == created
    assert complete(alice, task).json()["status"] == "incomplete"  # toggled back: the next one stays
    assert complete(alice, task, "/api/tasks/{id}", completed=True).json()["status"] == "complete"  # and again
    put = alice.http.put(f"/api/tasks/{task['id']}", json={"title": "once", "completed": True})
    assert put.status_code == 200
    assert task_count(db, alice) == 2


def test_five_concurrent_completions_through_two_processes_make_one_next_occurrence(
    alice: User, service: Service, start_service: Callable[..., Service], db: Engine
) -> None:
    other = start_service()
    # Two set completed, three toggle, through both processes: whatever order they commit in.
    requests = [
        (service, None),
        (other, {"completed": True}),
        (service, {}),
        (other, None),
        (service, {"completed": True}),
    ]
    for round_ in range(3):
        task = alice.create(title=f"race {round_}", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
        answers: list[httpx.Response] = []

        def finish(target: Service, body: dict[str, Any] | None, task_id: int, into: list[httpx.Response]) -> None:
            with httpx.Client(base_url=target.base_url, headers={"Authorization": f"Bearer {alice.token}"}) as http:
                into.append(http.patch(f"/api/tasks/{task_id}/complete", json=body))

        threads = [threading.Thread(target=finish, args=(*request, task["id"], answers)) for request in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {answer.status_code for answer in answers} == {200}
        with db.connect() as connection:
            spawned = connection.scalar(
                text("SELECT count(*) FROM tasks WHERE user_id = :u AND title = :t AND id <> :id"),
                {"u": alice.id, "t": task["title"], "id": task["id"]},
            )
        assert spawned == 1, f"round {round_}: {spawned} next occurrences"


def test_a_series_past_its_until_makes_no_next_occurrence(alice: User) -> None:
    last = alice.create(title="last", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY;UNTIL=20300101")
    assert following(alice, complete(alice, last)) is None
    assert len(server_tasks(alice.http)) == 1


def test_the_next_occurrence_is_in_the_feed_like_any_write(alice: User) -> None:
    task = alice.create(title="fed", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
    replica = Replica()
    replica.follow(alice.http)
    complete(alice, task)
    [page] = replica.follow(alice.http)
    assert len(page) == 2 and {entry["type"] for entry in page} == {"upsert"}
    assert replica.tasks == server_tasks(alice.http)


def test_completing_at_the_task_cap_is_409_and_changes_nothing(start_service: Callable[..., Service]) -> None:
    capped = start_service(MAX_TASKS_PER_USER="1")
    user = User(capped.base_url)
    task = user.create(title="only one", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
    problem = assert_problem(user.http.patch(f"/api/tasks/{task['id']}/complete"), 409)
    assert "1 tasks" in problem["detail"]
    assert server_tasks(user.http) == {task["id"]: task}


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ("FREQ=HOURLY", "FREQ"),
        ("FREQ=MINUTELY;INTERVAL=5", "FREQ"),
        ("FREQ=WEEKLY;BYHOUR=9", "BYHOUR"),
        ("FREQ=WEEKLY;BYDAY=MONDAY", "BYDAY"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
        ("FREQ=DAILY;COUNT=0", "COUNT"),
        ("FREQ=DAILY;COUNT=2;UNTIL=20300101", "UNTIL"),
        ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL"),
        ("BYDAY=MO", "FREQ"),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ"),
        ("every monday", "recurrence"),
        ("", "recurrence"),
    ],
)
def test_an_invalid_rule_is_a_422_naming_the_part(alice: User, db: Engine, rule: str, part: str) -> None:
    response = alice.http.post(
        "/api/tasks", json={"title": "x", "due_date": "2030-01-01T10:00:00Z", "recurrence": rule}
    )
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["field"] == "recurrence"
    assert part in error["message"] or part == "recurrence"
    assert server_tasks(alice.http) == {}


def test_an_unknown_zone_and_a_rule_without_a_due_date_are_422s(alice: User) -> None:
    for body in (
        {"title": "x", "time_zone": "Mars/Olympus_Mons"},
        {"title": "x", "time_zone": "../../etc/passwd"},
        {"title": "x", "time_zone": ""},
    ):
        [error] = assert_problem(alice.http.post("/api/tasks", json=body), 422)["errors"]
        assert error["field"] == "time_zone"
    [error] = assert_problem(alice.http.post("/api/tasks", json={"title": "x", "recurrence": "FREQ=DAILY"}), 422)[
        "errors"
    ]
    assert (error["field"], error["message"].startswith("needs a due_date")) == ("recurrence", True)
    plain = alice.create(title="no due date")
    [error] = assert_problem(alice.http.patch(f"/api/tasks/{plain['id']}", json={"recurrence": "FREQ=DAILY"}), 422)[
        "errors"
    ]
    assert error["field"] == "recurrence"
    recurring = alice.create(title="r", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
    assert_problem(alice.http.patch(f"/api/tasks/{recurring['id']}", json={"due_date": None}), 422)
    assert alice.http.get(f"/api/tasks/{recurring['id']}").json() == recurring
    # A zone is matched whatever its case, and stored by its IANA name.
    assert alice.create(title="z", time_zone="america/NEW_YORK")["time_zone"] == "America/New_York"


def test_filters_recurring_and_has_reminder(alice: User) -> None:
    plain = alice.create(title="plain")
    recurring = alice.create(title="r", due_date="2030-01-01T10:00:00Z", recurrence="FREQ=DAILY")
    reminded = alice.create(title="m", remind_at="2030-01-01T09:00:00Z")

    def listed(**params: str) -> set[int]:
        response = alice.http.get("/api/tasks", params=params)
        assert response.status_code == 200, response.text
        return {task["id"] for task in response.json()}

    assert listed(recurring="true") == {recurring["id"]}
    assert listed(recurring="false") == {plain["id"], reminded["id"]}
    assert listed(has_reminder="true") == {reminded["id"]}
    assert listed(has_reminder="false", recurring="false") == {plain["id"]}


def test_a_task_always_has_the_three_fields(alice: User) -> None:
    task = alice.create(title="plain")
    assert (task["recurrence"], task["time_zone"], task["remind_at"]) == (None, "UTC", None)
    changed = alice.http.patch(f"/api/tasks/{task['id']}", json={"remind_at": "2030-01-01T10:00:00+02:00"}).json()
    assert datetime.fromisoformat(changed["remind_at"]) == datetime.fromisoformat("2030-01-01T08:00:00+00:00")
    assert changed["remind_at"].endswith("Z")
