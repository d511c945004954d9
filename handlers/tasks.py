"""Task operations: turn a validated request into a persistence call and an HTTP response.

Connexion has already checked every parameter and body against openapi.yaml; `user` is the
token's subject and `token_info` the caller's profile (see handlers.auth).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from connexion import request
from starlette.responses import Response

from handlers import cursors, recurrence, state
from handlers.problems import NotFound, Unprocessable, invalid
from handlers.responses import json_response
from persistence import tasks
from persistence.database import Database
from persistence.tasks import Filters, Occurrence, Order, Owner, SortField

DEFAULT_LIMIT = 100
_STATUS = {"all": None, "incomplete": False, "complete": True, "active": False, "pending": False, "completed": True}
_SORT_BY = {"created": "created_at", "updated": "updated_at"}
_ETAG = re.compile(r'"v([1-9][0-9]{0,8})"')  # as _etag writes it, within PostgreSQL's integer


async def find(user: str, **query: Any) -> Response:
    """The caller's tasks, one page, with `Link: rel="next"` when more exist."""
    app = state.of(request.scope)
    filters, order = _list_query(query)
    limit = query.get("limit") or DEFAULT_LIMIT
    bound = _canonical(filters, order)
    after = cursors.decode(app.cursor_keys, query["cursor"], user_id=user, query=bound) if query.get("cursor") else None
    rows = await tasks.list_for_user(
        app.database, user, filters, order, after=after, limit=limit + 1, search_timeout_ms=app.search_timeout_ms
    )
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = cursors.encode(app.cursor_keys, tasks.keyset(rows[-1], order), user_id=user, query=bound)
        # A relative reference (RFC 8288 §3.1): the Host header is the client's to choose.
        next_url = request.url.include_query_params(cursor=cursor)
        headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    return _json([render(row) for row in rows], headers=headers)


async def create(user: str, token_info: dict[str, Any], body: dict[str, Any]) -> Response:
    """201 with the new task; a retried Idempotency-Key with the same body replays the first answer."""
    fields = _writable(body)
    if fields.get("recurrence") is not None and fields.get("due_date") is None:
        raise _needs_due_date()
    key = request.headers.get("idempotency-key")
    idempotency = (key, _fingerprint(fields)) if key else None
    owner = Owner(id=user, email=token_info.get("email"), name=token_info.get("name"))
    app = state.of(request.scope)
    created = await tasks.create_for_user(
        app.database, owner, fields, max_tasks=app.max_tasks_per_user, idempotency=idempotency
    )
    headers = {"Location": f"/api/tasks/{created.task['id']}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return _json(render(created.task), status=201, headers=headers, etag=created.task)


async def get(user: str, id: int) -> Response:
    """The task, or 304 when `If-None-Match` names its current ETag."""
    task = await tasks.get_for_user(_database(), user, id)
    if task is None:
        raise _not_found(id)
    if _holds_current(request.headers.get("if-none-match"), _etag(task)):
        return Response(status_code=304, headers={"ETag": _etag(task)})
    return _json(render(task), etag=task)


async def replace(user: str, id: int, body: dict[str, Any]) -> Response:
    """PUT: `title` required, fields left out keep their value."""
    return await _update(user, id, _writable(body))


async def update(user: str, id: int, body: dict[str, Any]) -> Response:
    return await _update(user, id, _writable(body))


async def complete(user: str, id: int, body: dict[str, Any] | None = None) -> Response:
    """Set `completed` when given; toggle it for an empty body."""
    if body and "completed" in body:
        return await _update(user, id, {"completed": body["completed"]})
    return await _update(user, id, {}, toggle_completed=True)


async def delete(user: str, id: int) -> Response:
    if not await tasks.delete_for_user(_database(), user, id, expected_versions=_if_match()):
        raise _not_found(id)
    return Response(status_code=204)


async def _update(user: str, task_id: int, changes: dict[str, Any], *, toggle_completed: bool = False) -> Response:
    app = state.of(request.scope)
    try:
        updated = await tasks.update_for_user(
            app.database,
            user,
            task_id,
            changes,
            toggle_completed=toggle_completed,
            expected_versions=_if_match(),
            recur=_next_occurrence,
            max_tasks=app.max_tasks_per_user,
        )
    except tasks.RecurrenceNeedsDueDate:
        raise _needs_due_date() from None
    if updated is None:
        raise _not_found(task_id)
    headers = {}
    if updated.next_occurrence is not None:
        headers["Link"] = f'</api/tasks/{updated.next_occurrence}>; rel="next-occurrence"'
    return _json(render(updated.task), headers=headers, etag=updated.task)


def _next_occurrence(task: Mapping[str, Any]) -> Occurrence | None:
    """After completing `task`, the rule's first occurrence after its due date; its reminder as
    long before that as the task's was before its own."""
    rule = recurrence.parse(task["recurrence"])
    due = rule.next_after(task["due_date"], task["time_zone"], task["occurrence"])
    if due is None:
        return None
    remind_at = task["remind_at"]
    return Occurrence(due, due - (task["due_date"] - remind_at) if remind_at is not None else None)


def _needs_due_date() -> Unprocessable:
    message = "needs a due_date: the first occurrence is due then (clear recurrence to clear it)"
    return invalid("recurrence", message)


def _database() -> Database:
    return state.of(request.scope).database


def _fingerprint(fields: dict[str, Any]) -> str:
    """The same for two bodies that mean the same (normalised fields, keys sorted)."""
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def _not_found(task_id: int) -> NotFound:
    return NotFound(f"task {task_id} does not exist")


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    """The body as column values: title and tags trimmed, tags deduplicated, instants parsed, the
    recurrence rule checked and spelled one way, the time zone by its IANA name."""
    fields = dict(body)
    if "title" in fields:
        fields["title"] = fields["title"].strip()
    if "tags" in fields:
        kept: dict[str, str] = {}  # by key, the first spelling, in order
        for tag in fields["tags"]:
            kept.setdefault(tasks.tag_key(tag), tag.strip())
        fields["tags"] = list(kept.values())
    for instant in ("due_date", "remind_at"):
        if fields.get(instant) is not None:
            fields[instant] = _instant(fields[instant], instant)
    if fields.get("recurrence") is not None:
        try:
            fields["recurrence"] = recurrence.parse(fields["recurrence"]).text
        except recurrence.RuleError as error:
            raise invalid("recurrence", str(error)) from None
    if "time_zone" in fields:
        try:
            fields["time_zone"] = recurrence.time_zone(fields["time_zone"])
        except ValueError:
            message = "must be an IANA time zone name such as Europe/Berlin"
            raise invalid("time_zone", message) from None
    return fields


def _instant(value: str, field: str) -> datetime:
    """An RFC 3339 date-time (validated by the contract) as a UTC datetime, 422 beyond years 1–9999."""
    try:
        moment = datetime.fromisoformat(value.upper())
        if moment.tzinfo is None:
            raise ValueError(value)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        message = "must be an RFC 3339 date-time with an offset, between years 1 and 9999 in UTC"
        raise invalid(field, message) from None


def _list_query(query: dict[str, Any]) -> tuple[Filters, Order]:
    """Filters and order in canonical terms; aliases resolved, contradictions refused."""
    completed = _agree(
        "status",
        _STATUS[query["status"]] if "status" in query else None,
        "completed",
        query.get("completed"),
    )
    text = _agree("q", query.get("q"), "search", query.get("search"))
    sort = _sort(query["sort"]) if "sort" in query else None
    sort_by = query.get("sort_by")
    alias_sort = None
    if sort_by is not None or "sort_order" in query:
        field = _SORT_BY.get(sort_by or "created_at", sort_by or "created_at")
        descending = query.get("sort_order", "asc" if field == "title" else "desc") == "desc"
        alias_sort = _order(field, descending)
    order = _agree("sort", sort, "sort_by", alias_sort) or Order()
    filters = Filters(
        completed=completed,
        text=text or None,
        priorities=tuple(sorted(set(query.get("priority") or ()))),
        tags=tuple(query.get("tag") or ()),
        due_before=_instant(query["due_before"], "due_before") if "due_before" in query else None,
        due_after=_instant(query["due_after"], "due_after") if "due_after" in query else None,
        overdue=query.get("overdue"),
        recurring=query.get("recurring"),
        has_reminder=query.get("has_reminder"),
    )
    return filters, order


def _sort(value: str) -> Order:
    return _order(value.lstrip("-"), value.startswith("-"))


def _order(field: str, descending: bool) -> Order:
    return Order(cast(SortField, field), descending)  # a field the contract's enum admitted


def _agree(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    if value is not None and alias_value is not None and value != alias_value:
        message = f"means something else than {name}; give one of them"
        raise invalid(alias, message)
    return value if value is not None else alias_value


def _canonical(filters: Filters, order: Order) -> dict[str, Any]:
    """What a cursor is bound to: the meaning of the query, not its spelling."""
    return {
        "completed": filters.completed,
        "text": filters.text,
        "priorities": filters.priorities,
        "tags": sorted({tasks.tag_key(tag) for tag in filters.tags}),
        "due_before": filters.due_before.timestamp() if filters.due_before else None,
        "due_after": filters.due_after.timestamp() if filters.due_after else None,
        "overdue": filters.overdue,
        "sort": [order.field, order.descending],
        # Filters added later are bound only when used, so cursors made before them stay valid.
        **{name: value for name in ("recurring", "has_reminder") if (value := getattr(filters, name)) is not None},
    }


def _if_match() -> list[int] | None:
    """Versions `If-Match` accepts (RFC 9110, strong comparison); None when any version will do.

    Only tags spelled exactly as this service spells them can match; anything else matches none.
    """
    header = request.headers.get("if-match")
    if header is None:
        return None
    versions = []
    for tag in _entity_tags(header):
        if tag == "*":
            return None
        if match := _ETAG.fullmatch(tag):
            versions.append(int(match[1]))
    return versions


def _holds_current(if_none_match: str | None, etag: str) -> bool:
    """`If-None-Match` is `*` or lists `etag`, weakly compared (RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _entity_tags(if_none_match))


def _entity_tags(header: str) -> list[str]:
    """The members of an If-Match / If-None-Match list (`*` or entity tags, comma-separated)."""
    return [part.strip() for part in header.split(",")]


def _etag(task: Any) -> str:
    return f'"v{task["version"]}"'


def render(row: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's Task from a row: every column but the version (which the ETag carries),
    instants in UTC, and the status derived from `completed`."""
    task = dict(row)
    task.pop("version", None)
    for name in tasks.INSTANTS:  # only these columns' values can be datetimes: no test of each value
        if (instant := task.get(name)) is not None and instant.tzinfo is not UTC:  # the sessions' zone
            task[name] = instant.astimezone(UTC)
    task["status"] = "complete" if row["completed"] else "incomplete"
    return task


def _json(content: Any, *, status: int = 200, headers: dict[str, str] | None = None, etag: Any = None) -> Response:
    headers = dict(headers or {})
    if etag is not None:
        headers["ETag"] = _etag(etag)
    return json_response(content, status=status, headers=headers)
