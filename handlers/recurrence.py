"""Recurring tasks: RFC 5545 rules, read strictly, and the next occurrence after a completed one.

The rule's arithmetic is python-dateutil's `rrule` (RFC 5545: BYMONTHDAY=31 skips short months,
BYSETPOS picks within each period, and so on); the wall clock is the task's time zone, from
`zoneinfo` (the `tzdata` package when the system has no zone files), so "every weekday at 09:00
Europe/Berlin" stays 09:00 there across daylight-saving changes. What this module adds is what a
task service needs around it: only the parts a task can use, each checked so that a 422 names the
part at fault; COUNT counted over the whole series (an occurrence knows its number in it); and a
search for the next occurrence that ends, however odd the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as _rrule
from dateutil.rrule import rrulestr

FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_WEEKDAY = r"(?:MO|TU|WE|TH|FR|SA|SU)"
_NUMBERS = r"[+-]?\d{1,3}(?:,[+-]?\d{1,3})*"
# Each part a task's rule may have, and the shape of its value.
_PARTS = {
    "FREQ": re.compile("|".join(FREQUENCIES)),
    "INTERVAL": re.compile(r"\d{1,4}"),
    "COUNT": re.compile(r"\d{1,5}"),
    "UNTIL": re.compile(r"\d{8}(?:T\d{6}Z?)?"),
    "BYDAY": re.compile(rf"[+-]?\d{{0,2}}{_WEEKDAY}(?:,[+-]?\d{{0,2}}{_WEEKDAY})*"),
    "BYMONTHDAY": re.compile(_NUMBERS),
    "BYMONTH": re.compile(r"\d{1,2}(?:,\d{1,2})*"),
    "BYSETPOS": re.compile(_NUMBERS),
    "WKST": re.compile(_WEEKDAY),
}
_RANGES = {"BYMONTHDAY": (1, 31), "BYMONTH": (1, 12), "BYSETPOS": (1, 366), "INTERVAL": (1, 1000), "COUNT": (1, 10000)}
_SUB_DAILY = ("SECONDLY", "MINUTELY", "HOURLY")
# How far ahead the next occurrence is looked for: a rule that matches no day within it (Feb 30th)
# has no next occurrence, and the search costs at most this many days' work.
HORIZON = timedelta(days=366 * 10)
MAX_RULE_CHARS = 500


class RuleError(ValueError):
    """The rule cannot be used; `part` names where (FREQ, BYDAY, …, or `recurrence` for the whole)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}" if part != "recurrence" else message)
        self.part = part


@dataclass(frozen=True, slots=True)
class Rule:
    parts: tuple[tuple[str, str], ...]  # in the order given, names upper-cased

    @property
    def text(self) -> str:
        """The rule as stored and shown: `FREQ=WEEKLY;BYDAY=MO` (no `RRULE:` prefix)."""
        return ";".join(f"{name}={value}" for name, value in self.parts)

    @property
    def count(self) -> int | None:
        value = dict(self.parts).get("COUNT")
        return int(value) if value is not None else None

    def next_after(self, due: datetime, zone: str, number: int) -> datetime | None:
        """The first occurrence after `due` (an aware datetime), the occurrence numbered `number` in
        its series; None when the series has ended (COUNT, UNTIL) or has none within HORIZON."""
        if self.count is not None and number >= self.count:
            return None
        place = ZoneInfo(zone)
        start = due.astimezone(place)
        parts = dict(self.parts)
        ends = start + HORIZON
        if "UNTIL" in parts:
            ends = min(ends, _until(parts["UNTIL"], place))
        rule = ";".join(f"{name}={value}" for name, value in self.parts if name not in ("COUNT", "UNTIL"))
        parsed = rrulestr(rule, dtstart=start, ignoretz=True)
        assert isinstance(parsed, _rrule.rrule)  # one RRULE, not a set
        recurrence = parsed.replace(until=ends)
        recurrence._todo_api_last_year = ends.year  # type: ignore[attr-defined]  # see _bounded_rebuild
        try:
            following: datetime | None = recurrence.after(start)
        except _BeyondHorizon:
            return None
        return following.astimezone(UTC) if following is not None else None


def parse(text: str) -> Rule:
    """`text` (an RRULE, with or without `RRULE:`) as a Rule; RuleError naming the part at fault."""
    if len(text) > MAX_RULE_CHARS:
        raise RuleError("recurrence", f"must be at most {MAX_RULE_CHARS} characters")
    body = text.strip()
    if body[:6].upper() == "RRULE:":
        body = body[6:]
    if not body:
        raise RuleError("recurrence", "must be an RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=MO")
    parts: dict[str, str] = {}
    for part in body.split(";"):
        name, equals, value = part.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not equals or not name:
            raise RuleError("recurrence", f"{part!r} is not NAME=VALUE")
        if name in parts:
            raise RuleError(name, "is given twice")
        if name not in _PARTS:
            raise RuleError(name, f"is not supported (only {', '.join(_PARTS)})")
        if name == "FREQ" and value in _SUB_DAILY:
            raise RuleError(name, f"{value} repeats more than daily; use {', '.join(FREQUENCIES)}")
        if not _PARTS[name].fullmatch(value):
            raise RuleError(name, f"{value!r} is not a valid value")
        _check_range(name, value)
        parts[name] = value
    if "FREQ" not in parts:
        raise RuleError("FREQ", f"is required ({', '.join(FREQUENCIES)})")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RuleError("UNTIL", "cannot be given with COUNT")
    rule = Rule(tuple(parts.items()))
    try:
        rrulestr(";".join(f"{n}={v}" for n, v in rule.parts if n != "UNTIL"), dtstart=datetime(2000, 1, 1))
        if "UNTIL" in parts:
            _until(parts["UNTIL"], ZoneInfo("UTC"))
    except ValueError as error:
        raise RuleError("recurrence", f"is not a valid RRULE ({error})") from None
    return rule


def time_zone(name: str) -> str:
    """The IANA name `name` stands for (matched regardless of case); ValueError if there is none."""
    canonical = _zones().get(name.strip().lower())
    if canonical is None:
        raise ValueError(name)
    return canonical


@cache
def _zones() -> dict[str, str]:
    """The IANA zones the tzdata package lists — the same on every host, whatever zone files the
    system has (and none of its own, such as `localtime`) — but `Factory`, which is no place."""
    listed = resources.files("tzdata").joinpath("zones").read_text().split()
    return {name.lower(): name for name in listed if name != "Factory"}


def _check_range(name: str, value: str) -> None:
    if name not in _RANGES:
        return
    low, high = _RANGES[name]
    for number in (abs(int(item)) for item in value.split(",")):
        if not low <= number <= high:
            raise RuleError(name, f"{value!r} is out of range ({low} to {high})")


def _until(value: str, place: ZoneInfo) -> datetime:
    """UNTIL as an instant: UTC with `Z`; else the task's wall clock; a date alone is its whole day."""
    if len(value) == 8:
        day = datetime.strptime(value, "%Y%m%d").date()
        return datetime.combine(day, time(23, 59, 59), tzinfo=place)
    moment = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
    return moment.replace(tzinfo=UTC if value.endswith("Z") else place)


class _BeyondHorizon(Exception):
    pass


# dateutil checks UNTIL only against occurrences it finds: a rule that matches no day at all
# (BYMONTH=2;BYMONTHDAY=30) makes it walk every period up to year 9999 — seconds of CPU for a
# daily rule. It moves to each new month through _iterinfo.rebuild, so a rule marked with its last
# year stops there. (dateutil 2.9; tests/api/test_recurrence.py fails if this stops taking effect.)
_rebuild = _rrule._iterinfo.rebuild


def _bounded_rebuild(self: Any, year: int, month: int) -> None:
    last = getattr(getattr(self, "rrule", None), "_todo_api_last_year", None)
    if last is not None and year > last:
        raise _BeyondHorizon
    _rebuild(self, year, month)


_rrule._iterinfo.rebuild = _bounded_rebuild  # type: ignore[method-assign]
