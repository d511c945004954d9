"""Queries on tasks; every one is scoped by the owner's user id.

Statements are SQLAlchemy Core, built by pure functions and compiled once per builder and
arguments (which filters, which columns), then reused with new values; persistence.database runs
them in one round trip where one statement does the job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.errors import QueryCanceled
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Select,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, psycopg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.compiler import SQLCompiler

from persistence.database import Database, Row
from persistence.tables import idempotency_keys, priority, task_tags, tasks, users

SortField = Literal["created_at", "updated_at", "title", "priority", "due_date"]
IDEMPOTENCY_TTL = text("interval '24 hours'")


_columns = tuple(tasks.c)  # a task's row is the whole table row
_DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    constants: dict[str, Any]  # values SQLAlchemy bound itself (a literal 1, a NULL)

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.constants, **params}


@functools.cache
def _sql(build: Callable[..., ClauseElement], *args: Hashable) -> _Compiled:
    """The statement `build(*args)` makes, compiled once per builder and arguments: a builder is
    a pure function of its arguments, so they are the whole cache key."""
    statement = build(*args).compile(dialect=_DIALECT)
    assert isinstance(statement, SQLCompiler)
    constants = {name: bind.value for name, bind in statement.binds.items() if not bind.required}
    return _Compiled(str(statement), constants)


async def _fetch(db: Database, user_id: str, statement: _Compiled, params: Mapping[str, Any]) -> list[Row]:
    """The rows of `statement`, run as `user_id` in one round trip."""
    return await db.run(user_id, statement.sql, statement(params))


@dataclass(frozen=True, slots=True)
class Owner:
    """The caller, as the users row is created from their token's claims."""

    id: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Filters:
    completed: bool | None = None
    text: str | None = None
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None


@dataclass(frozen=True, slots=True)
class Order:
    field: SortField = "created_at"
    descending: bool = True


class PreconditionFailed(Exception):
    """The task exists but its version is not one the caller expected."""


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key came back with a different request body."""


class TaskLimitReached(Exception):
    """The owner already holds the most tasks one user may (MAX_TASKS_PER_USER)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class SearchTooCostly(Exception):
    """A text search ran past its own statement budget (SEARCH_TIMEOUT_MS)."""

    def __init__(self, budget_ms: int) -> None:
        super().__init__(budget_ms)
        self.budget_ms = budget_ms


@dataclass(frozen=True, slots=True)
class Created:
    task: Row
    replayed: bool


async def list_for_user(
    db: Database,
    user_id: str,
    filters: Filters,
    order: Order,
    *,
    after: Sequence[Any] | None,
    limit: int,
    search_timeout_ms: int = 0,
) -> list[Row]:
    """Up to `limit` of the user's tasks matching `filters`, in `order`, after the keyset `after`;
    a text search is cancelled after `search_timeout_ms` (0: the statement timeout only)."""
    params: dict[str, Any] = {"user_id": user_id, "limit": limit}
    conditions = tuple(_conditions(filters, params))
    statement = _sql(_list, conditions, order, _position(order, after, params))
    if "text" not in conditions or not search_timeout_ms:
        return await _fetch(db, user_id, statement, params)
    # A search's cost grows with the text it scans: it gets a budget of its own, tighter than
    # the general statement timeout, set for its transaction only.
    async with db.transaction(user_id) as cursor:
        await cursor.execute(
            "SELECT set_config('statement_timeout', %(budget)s, true)", {"budget": str(search_timeout_ms)}
        )
        try:
            await _execute(cursor, statement, params)
        except QueryCanceled:
            raise SearchTooCostly(search_timeout_ms) from None
        return await cursor.fetchall()


def _list(conditions: tuple[str, ...], order: Order, position: str) -> Select[Any]:
    query = select(*_columns).where(tasks.c.user_id == bindparam("user_id"))
    query = query.where(*(_condition(name) for name in conditions))
    return _ordered(query, order, position).limit(bindparam("limit"))


def keyset(task: Mapping[str, Any], order: Order) -> list[Any]:
    """The position of `task` in `order`, JSON-friendly, for `after` on the next page."""
    value = task[order.field]
    return [value.isoformat() if isinstance(value, datetime) else value, task["id"]]


async def get_for_user(db: Database, user_id: str, task_id: int) -> Row | None:
    rows = await _fetch(db, user_id, _sql(_get), {"user_id": user_id, "id": task_id})
    return rows[0] if rows else None


def _get() -> Any:
    return select(*_columns).where(*_task_matches(False))


def _add_owner() -> Any:
    return (
        pg_insert(users)
        .values(id=bindparam("user_id"), email=bindparam("email"), name=bindparam("name"))
        .on_conflict_do_nothing(index_elements=[users.c.id])
    )


def _count_in_owner() -> Any:
    """The owner's users row, created with one task or counting one more — only while the count
    is below the cap. The upsert locks the row and checks its newest version, so a user's
    concurrent creates cannot pass the cap together (migration 0006)."""
    owner = pg_insert(users).values(
        id=bindparam("user_id"), email=bindparam("email"), name=bindparam("name"), task_count=1
    )
    return owner.on_conflict_do_update(
        index_elements=[users.c.id],
        set_={"task_count": users.c.task_count + 1},
        where=users.c.task_count < bindparam("max_tasks"),
    ).returning(users.c.id)


def _insert_task(fields: Sequence[str]) -> Any:
    """Insert the task if its owner may hold one more (no row otherwise)."""
    counted = _count_in_owner().cte("counted")
    values = [cast(bindparam(name), tasks.c[name].type) for name in fields]
    row = select(counted.c.id, *values)
    return insert(tasks).from_select(["user_id", *fields], row).returning(*_columns)


async def create_for_user(
    db: Database,
    owner: Owner,
    fields: Mapping[str, Any],
    *,
    max_tasks: int,
    idempotency: tuple[str, str] | None = None,
) -> Created:
    """Insert a task (and the owner's users row if new), unless the owner already holds
    `max_tasks` (TaskLimitReached). With `(key, request_hash)`, a repeat of the same key and hash
    returns the first result instead; another hash raises IdempotencyKeyReused."""
    names = tuple(sorted(fields))
    params = {
        **fields,
        "user_id": owner.id,
        "email": owner.email,
        "name": owner.name,
        "max_tasks": max_tasks,
    }
    if idempotency is None:
        rows = await _fetch(db, owner.id, _sql(_insert_task, names), params)
        if not rows:
            raise TaskLimitReached(max_tasks)
        return Created(rows[0], replayed=False)
    key, request_hash = idempotency
    async with db.transaction(owner.id) as cursor:
        await _execute(cursor, _sql(_add_owner), params)
        earlier = await _claim_idempotency_key(cursor, owner.id, key, request_hash)
        if earlier is not None:
            return Created(earlier, replayed=True)
        await _execute(cursor, _sql(_insert_remembered, names), {**params, "key": key})
        task = await cursor.fetchone()
        if task is None:
            raise TaskLimitReached(max_tasks)  # the claim is rolled back with it
        return Created(task, replayed=False)


def _insert_remembered(fields: Sequence[str]) -> Any:
    """Insert the task as _insert_task does, and keep it as the response of the claimed key."""
    created = _insert_task(fields).cte("created")
    remember = (
        update(idempotency_keys)
        .where(idempotency_keys.c.user_id == bindparam("user_id"), idempotency_keys.c.key == bindparam("key"))
        .values(response=select(func.to_jsonb(created.table_valued())).scalar_subquery())
    )
    return select(created).add_cte(remember.cte("remember"))


def _claim() -> Any:
    """Claim the key (reviving an expired claim of it), and delete the caller's other expired keys:
    expiry is a deletion, done by the writes that add keys, so no purge job can silently stop."""
    fresh = idempotency_keys.c.created_at > func.now() - IDEMPOTENCY_TTL
    expired = delete(idempotency_keys).where(
        idempotency_keys.c.user_id == bindparam("user_id"), idempotency_keys.c.key != bindparam("key"), not_(fresh)
    )
    claim = pg_insert(idempotency_keys).values(
        user_id=bindparam("user_id"), key=bindparam("key"), request_hash=bindparam("request_hash")
    )
    return (
        claim.on_conflict_do_update(
            index_elements=[idempotency_keys.c.user_id, idempotency_keys.c.key],
            set_={"request_hash": bindparam("request_hash"), "response": None, "created_at": func.now()},
            where=not_(fresh),
        )
        .returning(idempotency_keys.c.key)
        .add_cte(expired.cte("expired"))
    )


def _replay() -> Any:
    return select(idempotency_keys.c.request_hash, idempotency_keys.c.response).where(
        idempotency_keys.c.user_id == bindparam("user_id"), idempotency_keys.c.key == bindparam("key")
    )


async def _claim_idempotency_key(cursor: Any, user_id: str, key: str, request_hash: str) -> Row | None:
    """Claim `key` for this request (None), or return the task it created before."""
    params = {"user_id": user_id, "key": key, "request_hash": request_hash}
    await _execute(cursor, _sql(_claim), params)
    if await cursor.fetchone() is not None:
        return None
    # A live claim exists; a concurrent first request with this key has committed by now.
    await _execute(cursor, _sql(_replay), params)
    earlier = await cursor.fetchone()
    if earlier["request_hash"] != request_hash:
        raise IdempotencyKeyReused(key)
    names = ", ".join(column.name for column in _columns)
    await cursor.execute(
        f"SELECT {names} FROM jsonb_populate_record(NULL::tasks, %(response)s)",
        {"response": Jsonb(earlier["response"])},
    )
    replayed: Row | None = await cursor.fetchone()
    return replayed


async def update_for_user(
    db: Database,
    user_id: str,
    task_id: int,
    changes: Mapping[str, Any],
    *,
    toggle_completed: bool = False,
    expected_versions: Sequence[int] | None = None,
) -> Row | None:
    """Apply `changes` (or flip `completed`); None when the user has no such task. A write that
    changes nothing leaves `version` and `updated_at` alone, so repeating it is idempotent.

    Raises PreconditionFailed when `expected_versions` is given and the task's is not in it.
    """
    checked = expected_versions is not None
    params = {**changes, "user_id": user_id, "id": task_id, "versions": list(expected_versions or [])}
    rows = await _fetch(db, user_id, _sql(_update, tuple(sorted(changes)), toggle_completed, checked), params)
    if rows:
        return rows[0]
    if checked:
        await _raise_if_exists(db, user_id, task_id)
    return None


def _update(names: tuple[str, ...], toggle_completed: bool, version_checked: bool) -> Any:
    values: dict[str, Any] = {name: bindparam(name) for name in names}
    if toggle_completed:
        values["completed"] = not_(tasks.c.completed)
    changed = or_(
        true() if toggle_completed else false(),
        *(tasks.c[name].is_distinct_from(bindparam(name)) for name in names),
    )
    return (
        update(tasks)
        .where(*_task_matches(version_checked))
        .values(
            **values,
            version=case((changed, tasks.c.version + 1), else_=tasks.c.version),
            updated_at=case((changed, func.clock_timestamp()), else_=tasks.c.updated_at),
        )
        .returning(*_columns)
    )


async def delete_for_user(
    db: Database, user_id: str, task_id: int, *, expected_versions: Sequence[int] | None = None
) -> bool:
    """Delete the task; False when the user has no such task. Raises PreconditionFailed like update."""
    checked = expected_versions is not None
    params = {"user_id": user_id, "id": task_id, "versions": list(expected_versions or [])}
    if await _fetch(db, user_id, _sql(_delete, checked), params):
        return True
    if checked:
        await _raise_if_exists(db, user_id, task_id)
    return False


def _delete(version_checked: bool) -> Any:
    """Delete the task, and count one task less in its owner's users row."""
    deleted = delete(tasks).where(*_task_matches(version_checked)).returning(tasks.c.id).cte("deleted")
    uncount = (
        update(users)
        .where(users.c.id == bindparam("user_id"), exists(select(deleted.c.id)))
        .values(task_count=users.c.task_count - 1)
    )
    return select(deleted.c.id).add_cte(uncount.cte("uncount"))


async def _execute(cursor: Any, statement: _Compiled, params: Mapping[str, Any]) -> None:
    await cursor.execute(statement.sql, statement(params))


def _task_matches(version_checked: bool) -> list[ColumnElement[bool]]:
    matches = [tasks.c.user_id == bindparam("user_id"), tasks.c.id == bindparam("id")]
    if version_checked:
        matches.append(tasks.c.version == any_(cast(bindparam("versions"), ARRAY(tasks.c.version.type))))
    return matches


async def _raise_if_exists(db: Database, user_id: str, task_id: int) -> None:
    found = await _fetch(db, user_id, _sql(_exists), {"user_id": user_id, "id": task_id})
    if found[0]["found"]:
        raise PreconditionFailed(task_id)


def _exists() -> Any:
    return select(exists().where(*_task_matches(False)).label("found"))


_overdue = and_(tasks.c.due_date < func.now(), tasks.c.completed.is_(False))
_CONDITIONS: dict[str, ColumnElement[bool]] = {
    "completed": tasks.c.completed == bindparam("completed"),
    # What ILIKE '%…%' means in a UTF-8 database (both sides lower-cased, then matched), in time
    # linear in the text: ILIKE backtracks, text length × pattern length per row.
    "text": or_(
        func.strpos(func.lower(tasks.c.title), func.lower(bindparam("needle"))) > 0,
        func.strpos(func.lower(tasks.c.description), func.lower(bindparam("needle"))) > 0,
    ),
    "priorities": tasks.c.priority == any_(cast(bindparam("priorities"), ARRAY(priority))),
    "due_before": tasks.c.due_date < bindparam("due_before"),
    "due_after": tasks.c.due_date > bindparam("due_after"),
    "overdue": _overdue,
    "not overdue": not_(func.coalesce(_overdue, False)),
}


def _conditions(filters: Filters, params: dict[str, Any]) -> list[str]:
    """The names of the conditions `filters` need (see _condition), their values in `params`."""
    names = []
    if filters.completed is not None:
        names.append("completed")
        params["completed"] = filters.completed
    if filters.text:
        names.append("text")
        params["needle"] = filters.text
    if filters.priorities:
        names.append("priorities")
        params["priorities"] = list(filters.priorities)
    for index, tag in enumerate(sorted({tag.lower() for tag in filters.tags})):
        names.append(f"tag_{index}")
        params[f"tag_{index}"] = tag
    for name in ("due_before", "due_after"):
        if getattr(filters, name) is not None:
            names.append(name)
            params[name] = getattr(filters, name)
    if filters.overdue is not None:
        names.append("overdue" if filters.overdue else "not overdue")
    return names


def _condition(name: str) -> ColumnElement[bool]:
    """The condition `name` from _conditions. A `tag_N` is a primary-key probe into task_tags,
    which row-level security does not get in the way of (unlike `@>` on the tags array)."""
    if name in _CONDITIONS:
        return _CONDITIONS[name]
    return exists().where(
        task_tags.c.user_id == tasks.c.user_id, task_tags.c.tag == bindparam(name), task_tags.c.task_id == tasks.c.id
    )


def _position(order: Order, after: Sequence[Any] | None, params: dict[str, Any]) -> str:
    """Which keyset condition the next page needs ("first", "after", "after null"); values to `params`."""
    if after is None:
        return "first"
    value, params["after_id"] = after
    if value is None:
        return "after null"
    params["after"] = (
        datetime.fromisoformat(value) if order.field in ("created_at", "updated_at", "due_date") else value
    )
    return "after"


def _ordered(query: Select[Any], order: Order, position: str) -> Select[Any]:
    column: ColumnElement[Any] = tasks.c.title.collate("C") if order.field == "title" else tasks.c[order.field]
    if order.field == "priority":
        after: ColumnElement[Any] = cast(bindparam("after"), priority)
    else:
        after = bindparam("after")

    def direction(c: ColumnElement[Any]) -> ColumnElement[Any]:
        return c.desc() if order.descending else c.asc()

    def beyond(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
        return left < right if order.descending else left > right

    last_id: ColumnElement[Any] = bindparam("after_id")
    if order.field == "due_date":
        # Tasks without a due date come last in both directions.
        query = query.order_by(tasks.c.due_date.is_(None), direction(column), direction(tasks.c.id))
        if position == "after null":
            return query.where(tasks.c.due_date.is_(None), beyond(tasks.c.id, last_id))
        if position == "after":
            return query.where(
                or_(beyond(tuple_(column, tasks.c.id), tuple_(after, last_id)), tasks.c.due_date.is_(None))
            )
        return query
    query = query.order_by(direction(column), direction(tasks.c.id))
    if position == "after":
        query = query.where(beyond(tuple_(column, tasks.c.id), tuple_(after, last_id)))
    return query
