"""Listing tasks: filters, every sort, keyset pagination with signed cursors, and client aliases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.users import User

Params = dict[str, Any]
RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
PAST, FUTURE = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"

# Duplicate titles, priorities and due dates (and missing ones), so that every sort has ties.
SEED: list[tuple[str, str, str | None, bool]] = [
    ("pear", "high", "2030-01-02T00:00:00Z", False),
    ("apple", "low", None, False),
    ("fig", "urgent", "2030-01-01T00:00:00Z", True),
    ("apple", "high", "2030-01-02T00:00:00Z", False),
    ("kiwi", "medium", None, False),
    ("fig", "low", "2029-12-31T00:00:00Z", True),
    ("apple", "medium", "2030-01-01T00:00:00Z", True),
    ("date", "urgent", None, False),
    ("pear", "medium", "2030-01-02T00:00:00Z", False),
    ("kiwi", "high", "2031-06-01T00:00:00Z", True),
]
TOUCHED = (3, 0, 7)  # modified after creation, in this order, so updated_at differs from created_at


@pytest.fixture(scope="module")
def seeded(service: Service) -> Iterator[tuple[User, list[dict[str, Any]]]]:
    """A user with the SEED tasks, read-only for the tests that use it."""
    user = User(service.base_url)
    tasks = [
        user.create(title=title, priority=priority, due_date=due, completed=completed)
        for title, priority, due, completed in SEED
    ]
    for index in TOUCHED:
        response = user.http.patch(f"/api/tasks/{tasks[index]['id']}", json={"description": "touched"})
        assert response.status_code == 200, response.text
        tasks[index] = response.json()
    yield user, tasks
    user.http.close()


def listed(user: User, params: Params | None = None) -> list[dict[str, Any]]:
    response = user.http.get("/api/tasks", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(user: User, params: Params | None = None) -> list[int]:
    return [task["id"] for task in listed(user, params)]


def titles(user: User, params: Params | None = None) -> list[str]:
    return sorted(task["title"] for task in listed(user, params))


def next_url(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    assert 'rel="next"' in link and link.startswith("<"), link
    return response.links["next"]["url"]


def cursor_of(url: str) -> str:
    return httpx.URL(url).params["cursor"]


def walk(user: User, params: Params, limit: int) -> list[list[int]]:
    """Every page of the listing, following `Link: rel="next"` until it is absent."""
    pages: list[list[int]] = []
    url: str | None = "/api/tasks"
    query: Params | None = {**params, "limit": limit}
    while url is not None:
        assert len(pages) < 50, "pagination does not end"
        response = user.http.get(url, params=query)
        assert response.status_code == 200, response.text
        page = [task["id"] for task in response.json()]
        url, query = next_url(response), None
        assert len(page) == limit if url else len(page) <= limit
        pages.append(page)
    return pages


def first_cursor(user: User, params: Params, limit: int = 3) -> str:
    response = user.http.get("/api/tasks", params={**params, "limit": limit})
    assert response.status_code == 200, response.text
    url = next_url(response)
    assert url is not None, "expected a next page"
    return cursor_of(url)


def expected_order(tasks: list[dict[str, Any]], field: str, descending: bool) -> list[int]:
    """The contract's order: by `field`, ties on id in the same direction, missing values last."""

    def value(task: dict[str, Any]) -> Any:
        if field == "priority":
            return RANK[task[field]]
        if field.endswith(("_at", "_date")):
            return datetime.fromisoformat(task[field])
        return task[field]

    present = sorted((t for t in tasks if t[field] is not None), key=lambda t: (value(t), t["id"]), reverse=descending)
    missing = sorted((t for t in tasks if t[field] is None), key=lambda t: t["id"], reverse=descending)
    return [task["id"] for task in present + missing]


SORTS: list[tuple[Params, str, bool]] = [
    ({}, "created_at", True),
    # `sort=field` ascending and `sort=-field` descending, for every field.
    *(
        ({"sort": sign + field}, field, sign == "-")
        for field in ("created_at", "updated_at", "title", "priority", "due_date")
        for sign in ("", "-")
    ),
    ({"sort_by": "created_at"}, "created_at", True),
    ({"sort_by": "created"}, "created_at", True),
    ({"sort_by": "created", "sort_order": "asc"}, "created_at", False),
    ({"sort_by": "updated_at"}, "updated_at", True),
    ({"sort_by": "updated", "sort_order": "asc"}, "updated_at", False),
    ({"sort_by": "title"}, "title", False),
    ({"sort_by": "title", "sort_order": "desc"}, "title", True),
    ({"sort_by": "priority"}, "priority", True),
    ({"sort_by": "priority", "sort_order": "asc"}, "priority", False),
    ({"sort_by": "due_date"}, "due_date", True),
    ({"sort_by": "due_date", "sort_order": "asc"}, "due_date", False),
]


@pytest.mark.parametrize(("params", "field", "descending"), SORTS, ids=lambda v: str(v))
def test_every_sort_orders_all_tasks_and_pages_walk_it_without_gaps_or_duplicates(
    seeded: tuple[User, list[dict[str, Any]]], params: Params, field: str, descending: bool
) -> None:
    user, tasks = seeded
    expected = expected_order(tasks, field, descending)
    assert ids(user, params) == expected
    assert ids(user, {**params, "limit": 500}) == expected
    pages = walk(user, params, limit=3)
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [task_id for page in pages for task_id in page] == expected


def test_tasks_without_due_date_come_last_in_both_directions(seeded: tuple[User, list[dict[str, Any]]]) -> None:
    user, _ = seeded
    for sort in ("due_date", "-due_date"):
        dues = [task["due_date"] for task in listed(user, {"sort": sort})]
        assert dues[-3:] == [None, None, None] and None not in dues[:-3]


def test_priority_sorts_low_to_urgent(seeded: tuple[User, list[dict[str, Any]]]) -> None:
    user, _ = seeded
    priorities = [task["priority"] for task in listed(user, {"sort": "priority"})]
    assert priorities == ["low"] * 2 + ["medium"] * 3 + ["high"] * 3 + ["urgent"] * 2


@pytest.mark.parametrize(("limit", "sizes"), [(5, [5, 5]), (10, [10]), (9, [9, 1]), (2, [2] * 5), (1, [1] * 10)])
def test_next_link_appears_only_while_more_rows_exist_even_for_an_exactly_full_last_page(
    seeded: tuple[User, list[dict[str, Any]]], limit: int, sizes: list[int]
) -> None:
    user, tasks = seeded
    pages = walk(user, {"sort": "title"}, limit)
    assert [len(page) for page in pages] == sizes
    assert [task_id for page in pages for task_id in page] == expected_order(tasks, "title", False)


def test_pages_keep_the_filters_they_were_made_with(seeded: tuple[User, list[dict[str, Any]]]) -> None:
    user, tasks = seeded
    params = {"status": "incomplete", "q": "A", "sort": "-priority"}
    expected = expected_order(
        [t for t in tasks if not t["completed"] and "a" in t["title"]], field="priority", descending=True
    )
    assert len(expected) == 5
    assert ids(user, params) == expected
    assert [task_id for page in walk(user, params, limit=2) for task_id in page] == expected


def test_default_limit_is_100(alice: User) -> None:
    for number in range(101):
        alice.create(title=f"task {number}")
    first = alice.http.get("/api/tasks")
    assert first.status_code == 200 and len(first.json()) == 100
    url = next_url(first)
    assert url is not None
    last = alice.http.get(url)
    assert last.status_code == 200 and len(last.json()) == 1 and next_url(last) is None
    assert len(ids(alice, {"limit": 500})) == 101


@pytest.mark.parametrize("limit", [1, 500])
def test_limit_accepts_1_to_500(seeded: tuple[User, list[dict[str, Any]]], limit: int) -> None:
    user, _ = seeded
    assert len(ids(user, {"limit": limit})) == min(limit, len(SEED))


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "2.5"])
def test_limit_outside_1_to_500_is_422(alice: User, limit: str) -> None:
    problem = assert_problem(alice.http.get("/api/tasks", params={"limit": limit}), 422)
    assert [error["field"] for error in problem["errors"]] == ["limit"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["done", "open"]),
        ({"status": "all"}, ["done", "open"]),
        ({"status": "incomplete"}, ["open"]),
        ({"status": "complete"}, ["done"]),
        ({"completed": "true"}, ["done"]),
        ({"completed": "false"}, ["open"]),
        ({"status": "active"}, ["open"]),
        ({"status": "pending"}, ["open"]),
        ({"status": "completed"}, ["done"]),
        ({"status": "complete", "completed": "true"}, ["done"]),
        ({"status": "active", "completed": "false"}, ["open"]),
    ],
)
def test_status_and_completed_filter_by_completion(alice: User, params: Params, expected: list[str]) -> None:
    alice.create(title="done", completed=True)
    alice.create(title="open")
    assert titles(alice, params) == expected


@pytest.mark.parametrize("name", ["q", "search"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("milk", ["Buy MILK", "Call mom"]),
        ("mIlK", ["Buy MILK", "Call mom"]),
        ("MOM", ["Call mom"]),
        ("%", ["100% sure"]),
        ("0%", ["100% sure"]),
        ("_", ["snake_case"]),
        ("e_c", ["snake_case"]),
        ("\\", ["back\\slash"]),
        ("nowhere", []),
    ],
)
def test_text_search_matches_title_or_description_case_insensitively_and_literally(
    alice: User, name: str, text: str, expected: list[str]
) -> None:
    alice.create(title="Buy MILK")
    alice.create(title="Call mom", description="pick up Milk on the way")
    alice.create(title="100% sure")
    alice.create(title="1000 sure", description="a thousand")
    alice.create(title="snake_case")
    alice.create(title="snakeXcase", description="snake case")
    alice.create(title="back\\slash")
    assert titles(alice, {name: text}) == expected


def test_a_long_search_text_matches_only_where_all_of_it_is_found(alice: User) -> None:
    """Past 32 characters the first 32 rule rows out first; the whole text still decides."""
    shared = "The quarterly report for the northern REGION, "
    alice.create(title="report", description=shared + "draft two")
    alice.create(title=shared + "final")
    alice.create(title="other", description=shared[:40])
    assert titles(alice, {"q": shared.lower() + "final"}) == [shared + "final"]
    assert titles(alice, {"q": shared.upper()}) == [shared + "final", "report"]
    assert titles(alice, {"q": shared + "draft three"}) == []


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ("high", ["high 1", "high 2"]),
        (["high", "urgent"], ["high 1", "high 2", "urgent"]),
        ("high,urgent", ["high 1", "high 2", "urgent"]),
        ("low,medium,high,urgent", ["high 1", "high 2", "low", "medium", "urgent"]),
        (["low", "medium"], ["low", "medium"]),
    ],
)
def test_priority_filter_takes_repeated_or_comma_separated_values(
    alice: User, priority: str | list[str], expected: list[str]
) -> None:
    for title, value in [("low", "low"), ("medium", "medium"), ("high 1", "high"), ("urgent", "urgent")]:
        alice.create(title=title, priority=value)
    alice.create(title="high 2", priority="high")
    assert titles(alice, {"priority": priority}) == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ("work", ["both", "work only", "work urgent"]),
        ("WORK", ["both", "work only", "work urgent"]),
        (["work", "home"], ["both"]),
        (["Home", "WoRk"], ["both"]),
        (["work", "urgent"], ["work urgent"]),
        (["work", "home", "urgent"], []),
        ("nothing", []),
    ],
)
def test_tag_filter_requires_every_tag_case_insensitively(
    alice: User, tags: str | list[str], expected: list[str]
) -> None:
    alice.create(title="work urgent", tags=["Work", "Urgent"])
    alice.create(title="work only", tags=["work"])
    alice.create(title="home only", tags=["home"])
    alice.create(title="both", tags=["WORK", "Home"])
    alice.create(title="untagged")
    assert titles(alice, {"tag": tags}) == expected


def test_tags_compare_by_one_rule_trimmed_and_case_folded_in_writes_filters_and_cursors(alice: User) -> None:
    german = alice.create(title="german", tags=["Straße", "STRASSE", " strasse "])
    assert german["tags"] == ["Straße"]  # one tag: the others were duplicates of it
    work = alice.create(title="work", tags=["work"])
    for spelling in ("STRASSE", "strasse", "Straße", " straße "):
        assert titles(alice, {"tag": spelling}) == ["german"], spelling
    for spelling in (" Work ", "\tWORK", "work"):
        assert titles(alice, {"tag": spelling}) == ["work"], spelling
    for number in range(3):
        alice.create(title=f"more work {number}", tags=[" WORK"])
    first = alice.http.get("/api/tasks", params={"tag": "Work", "limit": 2, "sort": "title"})
    cursor = first.links["next"]["url"].split("cursor=")[1]
    # The cursor is bound to what the filter means, not to how it was spelled.
    rest = alice.http.get("/api/tasks", params={"tag": " work ", "limit": 2, "sort": "title", "cursor": cursor})
    assert rest.status_code == 200, rest.text
    seen = [task["title"] for task in first.json() + rest.json()]
    assert seen == ["more work 0", "more work 1", "more work 2", "work"]
    assert work["tags"] == ["work"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"due_before": "2030-03-01T00:00:00Z"}, ["early"]),
        ({"due_after": "2030-03-01T00:00:00Z"}, ["late", "mid"]),
        ({"due_before": "2030-06-01T01:00:00+02:00"}, ["early"]),
        ({"due_before": "2030-06-01T01:00:00+00:00"}, ["early", "mid"]),
        ({"due_after": "2030-03-01T00:00:00Z", "due_before": "2030-12-31T00:00:00-05:00"}, ["mid"]),
        ({"due_after": "2032-01-01T00:00:00Z"}, []),
    ],
)
def test_due_before_and_due_after_bound_the_due_date(alice: User, params: Params, expected: list[str]) -> None:
    alice.create(title="early", due_date="2030-01-01T00:00:00Z")
    alice.create(title="mid", due_date="2030-06-01T00:00:00Z")
    alice.create(title="late", due_date="2031-01-01T00:00:00Z")
    alice.create(title="someday")
    assert titles(alice, params) == expected


@pytest.mark.parametrize(("overdue", "expected"), [("true", ["late"]), ("false", ["done late", "someday", "upcoming"])])
def test_overdue_means_due_in_the_past_and_not_complete(alice: User, overdue: str, expected: list[str]) -> None:
    alice.create(title="late", due_date=PAST)
    alice.create(title="done late", due_date=PAST, completed=True)
    alice.create(title="upcoming", due_date=FUTURE)
    alice.create(title="someday")
    assert titles(alice, {"overdue": overdue}) == expected


def test_filters_combine_with_and(alice: User) -> None:
    alice.create(title="match", priority="high", tags=["work"], due_date=PAST)
    alice.create(title="wrong priority", priority="low", tags=["work"], due_date=PAST)
    alice.create(title="wrong tag", priority="high", tags=["home"], due_date=PAST)
    alice.create(title="done", priority="high", tags=["work"], due_date=PAST, completed=True)
    alice.create(title="not due", priority="high", tags=["work"])
    params = {"priority": "high,urgent", "tag": "work", "status": "incomplete", "due_before": FUTURE}
    assert titles(alice, params) == ["match"]
    assert titles(alice, {"overdue": "true", "tag": "WORK", "priority": "high"}) == ["match"]


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ({"search": "a"}, {"q": "a"}),
        ({"search": "A", "q": "A"}, {"q": "A"}),
        ({"status": "active"}, {"status": "incomplete"}),
        ({"status": "pending"}, {"status": "incomplete"}),
        ({"status": "completed"}, {"status": "complete"}),
        ({"sort_by": "title", "sort": "title"}, {"sort": "title"}),
        ({"sort_by": "priority", "sort": "-priority"}, {"sort": "-priority"}),
        ({"sort_by": "created"}, {"sort": "-created_at"}),
        ({"sort_by": "updated"}, {"sort": "-updated_at"}),
        (
            {"search": "e", "status": "pending", "sort_by": "due_date", "sort_order": "asc"},
            {"q": "e", "status": "incomplete", "sort": "due_date"},
        ),
    ],
)
def test_aliases_mean_exactly_their_canonical_twin(
    seeded: tuple[User, list[dict[str, Any]]], alias: Params, canonical: Params
) -> None:
    user, _ = seeded
    expected = ids(user, canonical)
    assert expected and ids(user, alias) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"q": "a", "search": "b"},
        {"status": "complete", "completed": "false"},
        {"status": "active", "completed": "true"},
        {"status": "completed", "completed": "false"},
        {"sort": "title", "sort_by": "priority"},
        {"sort": "title", "sort_by": "title", "sort_order": "desc"},
        {"sort": "created_at", "sort_by": "created"},
    ],
)
def test_alias_contradicting_its_canonical_parameter_is_422(alice: User, params: Params) -> None:
    assert_problem(alice.http.get("/api/tasks", params=params), 422)


@pytest.mark.parametrize(
    "params",
    [{"page": "2"}, {"sortby": "title"}, {"filter": "x"}, {"Q": "x"}, {"status": "all", "offset": "10"}],
)
def test_unknown_query_parameter_is_422(alice: User, params: Params) -> None:
    problem = assert_problem(alice.http.get("/api/tasks", params=params), 422)
    unknown = set(params) - {"status"}
    assert unknown <= {error["field"] for error in problem["errors"]}


@pytest.mark.parametrize(
    "query",
    ["status=complete&status=active", "limit=5&limit=5", "q=a&q=b", "sort=title&sort=-title", "cursor=x&cursor=y"],
)
def test_a_single_valued_parameter_given_twice_is_422_not_silently_one_of_them(alice: User, query: str) -> None:
    problem = assert_problem(alice.http.get(f"/api/tasks?{query}"), 422)
    name = query.split("=")[0]
    assert problem["errors"] == [{"field": name, "message": "is given more than once; give it once"}]


def test_list_valued_parameters_may_repeat(alice: User) -> None:
    alice.create(title="tagged", tags=["a", "b"], priority="high")
    response = alice.http.get("/api/tasks?tag=a&tag=b&priority=high&priority=low")
    assert response.status_code == 200, response.text
    assert [task["title"] for task in response.json()] == ["tagged"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"completed": "yes"},
        {"sort": "name"},
        {"sort": "+title"},
        {"sort_by": "name"},
        {"sort_order": "up"},
        {"priority": "critical"},
        {"priority": "high,critical"},
        {"overdue": "maybe"},
        {"due_before": "tomorrow"},
        {"due_after": "2030-01-01"},
        {"due_after": "2030-01-01T00:00:00"},
    ],
)
def test_invalid_query_value_is_422(alice: User, params: Params) -> None:
    problem = assert_problem(alice.http.get("/api/tasks", params=params), 422)
    assert set(params) <= {error["field"].split(".")[0] for error in problem["errors"]}


def test_cursor_of_another_user_is_400(seeded: tuple[User, list[dict[str, Any]]], bob: User) -> None:
    user, _ = seeded
    for number in range(4):
        bob.create(title=f"bob {number}")
    cursor = first_cursor(user, {"sort": "title"})
    assert_problem(bob.http.get("/api/tasks", params={"sort": "title", "limit": 3, "cursor": cursor}), 400)
    assert user.http.get("/api/tasks", params={"sort": "title", "limit": 3, "cursor": cursor}).status_code == 200


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        ({"sort": "title"}, {"sort": "-title"}),
        ({"sort": "title"}, {"sort": "priority"}),
        ({"sort": "title"}, {}),
        ({"sort": "title"}, {"sort": "title", "q": "a"}),
        ({"sort": "title"}, {"sort": "title", "status": "incomplete"}),
        ({"sort": "title"}, {"sort": "title", "priority": "high"}),
        ({"sort": "title"}, {"sort": "title", "tag": "x"}),
        ({"sort": "title"}, {"sort": "title", "overdue": "false"}),
        ({"sort": "title"}, {"sort": "title", "due_before": FUTURE}),
        ({"sort": "title"}, {"sort": "title", "due_after": PAST}),
        ({"status": "incomplete"}, {}),
        ({"status": "incomplete"}, {"status": "complete"}),
        ({"q": "a"}, {"q": "e"}),
        ({"priority": "high,medium"}, {"priority": "high"}),
    ],
)
def test_cursor_reused_with_other_filters_or_sort_is_400(
    seeded: tuple[User, list[dict[str, Any]]], made_with: Params, used_with: Params
) -> None:
    user, _ = seeded
    cursor = first_cursor(user, made_with, limit=2)
    assert_problem(user.http.get("/api/tasks", params={**used_with, "limit": 2, "cursor": cursor}), 400)


def _flip(cursor: str, index: int) -> str:
    return cursor[:index] + ("B" if cursor[index] == "A" else "A") + cursor[index + 1 :]


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "flipped at the start": lambda c: _flip(c, 2),
    "flipped in the middle": lambda c: _flip(c, len(c) // 2),
    "flipped near the end": lambda c: _flip(c, len(c) - 4),
    "truncated": lambda c: c[:-6],
    "extended": lambda c: c + "AAAA",
    "garbage": lambda c: "not-a-cursor",
    "not base64": lambda c: "%%%%***",
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_tampered_cursor_is_400(seeded: tuple[User, list[dict[str, Any]]], tamper: Callable[[str], str]) -> None:
    user, _ = seeded
    cursor = first_cursor(user, {"sort": "title"})
    assert user.http.get("/api/tasks", params={"sort": "title", "limit": 3, "cursor": cursor}).status_code == 200
    tampered = tamper(cursor)
    assert tampered != cursor
    assert_problem(user.http.get("/api/tasks", params={"sort": "title", "limit": 3, "cursor": tampered}), 400)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ({"search": "a", "status": "pending", "sort_by": "title"}, {"q": "a", "status": "incomplete", "sort": "title"}),
        ({"sort_by": "created"}, {"sort": "-created_at"}),
        ({"sort_by": "updated", "sort_order": "asc"}, {"sort": "updated_at"}),
        ({"status": "completed", "sort_by": "priority"}, {"completed": "true", "sort": "-priority"}),
        (
            {"status": "active", "sort_by": "due_date", "sort_order": "asc"},
            {"status": "incomplete", "sort": "due_date"},
        ),
    ],
)
def test_cursor_made_with_aliases_works_with_the_canonical_twin_and_back(
    seeded: tuple[User, list[dict[str, Any]]], alias: Params, canonical: Params
) -> None:
    user, _ = seeded
    second_page = walk(user, canonical, limit=2)[1]
    for made_with, used_with in ((alias, canonical), (canonical, alias)):
        cursor = first_cursor(user, made_with, limit=2)
        assert ids(user, {**used_with, "limit": 2, "cursor": cursor}) == second_page


# -- bounded search -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["q", "search"])
def test_a_search_text_over_200_characters_is_422(alice: User, name: str) -> None:
    alice.create(title="a" * 200)
    assert titles(alice, {name: "a" * 200}) == ["a" * 200]
    problem = assert_problem(alice.http.get("/api/tasks", params={name: "a" * 201}), 422)
    assert [error["field"] for error in problem["errors"]] == [name]


def test_a_search_past_its_budget_is_a_422_naming_q_and_other_lists_still_answer(
    start_service: Callable[..., Service], db: Engine
) -> None:
    """The worst case for a substring search: long texts that almost match everywhere."""
    service = start_service(SEARCH_TIMEOUT_MS="1")
    user = User(service.base_url)
    with db.begin() as connection:
        connection.execute(text("INSERT INTO users (id) VALUES (:id)"), {"id": user.id})
        connection.execute(
            text(
                "INSERT INTO tasks (user_id, title, description)"
                " SELECT :id, 'task ' || n, repeat('Aé', 2500) FROM generate_series(1, 3000) AS n"
            ),
            {"id": user.id},
        )
    problem = assert_problem(user.http.get("/api/tasks", params={"q": "aé" * 99 + "x", "limit": 1}), 422)
    assert [error["field"] for error in problem["errors"]] == ["q"]
    assert user.http.get("/api/tasks", params={"limit": 1}).status_code == 200
    assert user.http.get("/api/tasks", params={"status": "complete"}).json() == []
    user.http.close()
