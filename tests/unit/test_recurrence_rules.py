"""handlers.recurrence in process, without a database: which rules are taken and how they are
spelled, the next occurrence on the calendar and the wall clock, and a search that ends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handlers import recurrence


def next_after(rule: str, due: str, zone: str = "UTC", number: int = 1) -> str | None:
    following = recurrence.parse(rule).next_after(datetime.fromisoformat(due), zone, number)
    return following.isoformat() if following else None


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("RRULE:FREQ=WEEKLY;BYDAY=MO", "FREQ=WEEKLY;BYDAY=MO"),
        ("rrule:freq=weekly;byday=mo,fr", "FREQ=WEEKLY;BYDAY=MO,FR"),
        (" FREQ = DAILY ; INTERVAL = 2 ", "FREQ=DAILY;INTERVAL=2"),
        ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=-1FR"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;UNTIL=20400301T000000Z", None),
    ],
)
def test_a_rule_is_stored_in_one_spelling(given: str, stored: str | None) -> None:
    assert recurrence.parse(given).text == (stored or given)


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ("FREQ=SECONDLY", "FREQ"),
        ("FREQ=DAILY;BYMINUTE=0", "BYMINUTE"),
        ("FREQ=DAILY;BYYEARDAY=1", "BYYEARDAY"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("FREQ=MONTHLY;BYSETPOS=0", "BYSETPOS"),
        ("FREQ=MONTHLY;BYMONTH=13", "BYMONTH"),
        ("FREQ=WEEKLY;WKST=XX", "WKST"),
        ("FREQ=DAILY;UNTIL=2030-01-01", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20301301", "recurrence"),  # the 13th month: dateutil's own check
        ("FREQ=DAILY;COUNT=1;UNTIL=20300101", "UNTIL"),
        ("FREQ", "recurrence"),
        ("FREQ=DAILY;INTERVAL=1;INTERVAL=2", "INTERVAL"),
        ("FREQ=DAILY;" + "INTERVAL=1;" * 60, "recurrence"),  # over 500 characters
    ],
)
def test_a_rule_a_task_cannot_use_names_its_part(rule: str, part: str) -> None:
    with pytest.raises(recurrence.RuleError) as refused:
        recurrence.parse(rule)
    assert refused.value.part == part


def test_the_wall_clock_of_the_zone_across_both_clock_changes() -> None:
    berlin = "Europe/Berlin"
    assert next_after("FREQ=DAILY", "2030-03-30T08:00:00+00:00", berlin) == "2030-03-31T07:00:00+00:00"
    assert next_after("FREQ=DAILY", "2030-10-26T07:00:00+00:00", berlin) == "2030-10-27T08:00:00+00:00"
    new_york = "America/New_York"  # another rule, another date: the second Sunday of March
    assert next_after("FREQ=WEEKLY", "2030-03-04T14:00:00+00:00", new_york) == "2030-03-11T13:00:00+00:00"


def test_count_is_the_whole_series_and_until_is_inclusive() -> None:
    assert next_after("FREQ=DAILY;COUNT=3", "2030-01-01T10:00:00+00:00", number=2) == "2030-01-02T10:00:00+00:00"
    assert next_after("FREQ=DAILY;COUNT=3", "2030-01-02T10:00:00+00:00", number=3) is None
    assert next_after("FREQ=DAILY;UNTIL=20300102T100000Z", "2030-01-01T10:00:00+00:00") == "2030-01-02T10:00:00+00:00"
    assert next_after("FREQ=DAILY;UNTIL=20300102T095959Z", "2030-01-01T10:00:00+00:00") is None


def test_a_rule_matching_no_day_ends_its_search_within_the_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bound, dateutil walks every day up to year 9999 (seconds of CPU) for this rule."""
    months: list[int] = []
    original = recurrence._rebuild

    def counting(self: object, year: int, month: int) -> None:
        months.append(month)
        original(self, year, month)

    monkeypatch.setattr(recurrence, "_rebuild", counting)
    assert next_after("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "2030-01-01T10:00:00+00:00") is None
    assert 0 < len(months) <= 12 * (recurrence.HORIZON.days // 365 + 2)


def test_time_zones_by_their_iana_names() -> None:
    assert recurrence.time_zone("europe/BERLIN") == "Europe/Berlin"
    assert recurrence.time_zone("UTC") == "UTC"
    for name in ("Mars/Base", "localtime", "Factory", "/etc/localtime", "../UTC", ""):
        with pytest.raises(ValueError, match=name):
            recurrence.time_zone(name)


def test_next_occurrences_are_instants_in_utc() -> None:
    following = recurrence.parse("FREQ=WEEKLY").next_after(datetime(2030, 1, 1, 9, tzinfo=UTC), "Asia/Tokyo", 1)
    assert following is not None and following.tzinfo == UTC
