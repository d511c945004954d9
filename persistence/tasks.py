"""Queries on tasks; every one is scoped by the owner's user id.

Statements are SQLAlchemy Core, built by pure functions and compiled once per builder and
arguments (which filters, which columns), then reused with new values; persistence.database runs
them in one round trip where one statement does the job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.errors import CheckViolation
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    DateTime,
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
    literal_column,
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
from persistence.errors import BudgetExceeded
from persistence.tables import idempotency_keys, priority, task_tags, tasks, users

SortField = Literal["created_at", "updated_at", "title", "priority", "due_date"]
IDEMPOTENCY_TTL = text("interval '24 hours'")


# A task's row: every column a client sees, and the version its ETag carries.
COLUMNS = tuple(column for column in tasks.c if not column.info.get("internal"))
NAMES = tuple(str(column.name) for column in COLUMNS)  # plain str: orjson refuses subclasses
INSTANTS = tuple(str(column.name) for column in COLUMNS if isinstance(column.type, DateTime))
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


def tag_key(tag: str) -> str:
    """How tags compare (SPEC: trimmed, case-insensitive) — for duplicates on write, filters,
    cursors and the index alike: `Straße`, ` STRASSE ` and `strasse` are one tag."""
    return tag.strip().casefold()


def _keyed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with the keys of its tags, if it sets tags."""
    if "tags" not in fields:
        return dict(fields)
    return {**fields, "tag_keys": [tag_key(tag) for tag in fields["tags"]]}


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
    recurring: bool | None = None
    has_reminder: bool | None = None


@dataclass(frozen=True, slots=True)
class Order:
    field: SortField = "created_at"
    descending: bool = True


class RecurrenceNeedsDueDate(Exception):
    """A write would leave a recurring task without a due date (the database's check refused it)."""


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


@dataclass(frozen=True, slots=True)
class Occurrence:
    """When a recurring task's next occurrence is due, and when it reminds."""

    due_date: datetime
    remind_at: datetime | None


# The next occurrence after a completed one, from its row (with `occurrence`, its number in the
# series); None when the series has ended.
NextOccurrence = Callable[[Row], Occurrence | None]


@dataclass(frozen=True, slots=True)
class Updated:
    task: Row
    next_occurrence: int | None = None  # the id of the occurrence completing this task created


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
    # A search's cost grows with the text it scans: it gets a budget of its own, tighter than
    # the general statement timeout.
    searches = bool({"text", "long text"} & set(conditions)) and search_timeout_ms > 0
    try:
        return await db.run(
            user_id, statement.sql, statement(params), timeout_ms=search_timeout_ms if searches else None
        )
    except BudgetExceeded:
        raise SearchTooCostly(search_timeout_ms) from None


def _list(conditions: tuple[str, ...], order: Order, position: str) -> Select[Any]:
    query = select(*COLUMNS).where(tasks.c.user_id == bindparam("user_id"))
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
    return select(*COLUMNS).where(*_task_matches(False))


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
    return insert(tasks).from_select(["user_id", *fields], row).returning(*COLUMNS)


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
    fields = _keyed(fields)
    names = tuple(sorted(fields))
    params = {
        **fields,
        "user_id": owner.id,
        "email": owner.email,
        "name": owner.name,
        "max_tasks": max_tasks,
    }
    if idempotency is None:
        with _checked_recurrence():
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
        with _checked_recurrence():
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
    await _execute(cursor, _sql(_replayed), {"response": Jsonb(earlier["response"])})
    replayed: Row | None = await cursor.fetchone()
    return replayed


def _replayed() -> Any:
    """The task a key's first request created, from the JSON kept with the key."""
    record = func.jsonb_populate_record(literal_column("NULL::tasks"), bindparam("response"))
    fields = record.table_valued(*NAMES)
    return select(*(fields.c[name] for name in NAMES))


async def update_for_user(
    db: Database,
    user_id: str,
    task_id: int,
    changes: Mapping[str, Any],
    *,
    toggle_completed: bool = False,
    expected_versions: Sequence[int] | None = None,
    recur: NextOccurrence | None = None,
    max_tasks: int = 0,
) -> Updated | None:
    """Apply `changes` (or flip `completed`); None when the user has no such task. A write that
    changes nothing leaves `version` and `updated_at` alone, so repeating it is idempotent.

    With `recur`, a write that completes an occurrence of a recurring task also creates its next
    occurrence (due when `recur` says), in the same transaction, once: the task remembers it.

    Raises PreconditionFailed when `expected_versions` is given and the task's is not in it,
    TaskLimitReached when the next occurrence would be one task too many (nothing is changed),
    RecurrenceNeedsDueDate when the task would recur without a due date.
    """
    checked = expected_versions is not None
    changes = _keyed(changes)
    params = {**changes, "user_id": user_id, "id": task_id, "versions": list(expected_versions or [])}
    if recur is not None and (toggle_completed or changes.get("completed") is True):
        return await _complete(db, user_id, task_id, changes, params, toggle_completed, checked, recur, max_tasks)
    with _checked_recurrence():
        rows = await _fetch(db, user_id, _sql(_update, tuple(sorted(changes)), toggle_completed, checked), params)
    if rows:
        return Updated(rows[0])
    if checked:
        await _raise_if_exists(db, user_id, task_id)
    return None


async def _complete(
    db: Database,
    user_id: str,
    task_id: int,
    changes: Mapping[str, Any],
    params: dict[str, Any],
    toggle_completed: bool,
    checked: bool,
    recur: NextOccurrence,
    max_tasks: int,
) -> Updated | None:
    """update_for_user for a write that may complete an occurrence: the task is locked first, and,
    when completing it may create the next one, its owner (for the count of their tasks) — in the
    order every write locks them (task, owner, feed head), so no two writes wait for each other."""
    async with db.transaction(user_id) as cursor:
        await _execute(cursor, _sql(_lock), params)
        current = await cursor.fetchone()
        if current is None:
            return None
        may_recur = current["recurrence"] is not None or changes.get("recurrence") is not None
        first_completion = not current["completed"] and current["next_id"] is None
        if may_recur and first_completion:
            await _execute(cursor, _sql(_lock_owner), params)
        with _checked_recurrence():
            await _execute(cursor, _sql(_update, tuple(sorted(changes)), toggle_completed, checked, True), params)
        task = await cursor.fetchone()
        if task is None:
            raise PreconditionFailed(task_id)
        next_id = current["next_existing"]
        if first_completion and task["completed"] and task["recurrence"] is not None:
            occurrence = recur(task)
            if occurrence is not None:
                next_id = await _insert_next(cursor, user_id, task_id, occurrence, max_tasks)
        return Updated({name: task[name] for name in NAMES}, next_id)


async def _insert_next(cursor: Any, user_id: str, task_id: int, occurrence: Occurrence, max_tasks: int) -> int:
    params = {
        "user_id": user_id,
        "id": task_id,
        "email": None,
        "name": None,
        "max_tasks": max_tasks,
        "due_date": occurrence.due_date,
        "remind_at": occurrence.remind_at,
    }
    await _execute(cursor, _sql(_next), params)
    created = await cursor.fetchone()
    if created is None:
        raise TaskLimitReached(max_tasks)
    # Set once: a completed occurrence names its next one for good (`next_id IS NULL` is the guard).
    await _execute(cursor, _sql(_link_next), {**params, "next_id": created["id"]})
    if await cursor.fetchone() is None:
        raise RuntimeError(f"task {task_id} has a next occurrence already")
    next_id: int = created["id"]
    return next_id


def _lock() -> Any:
    """The task's state before the write, locked; and its next occurrence, if that still exists."""
    following = tasks.alias("following")
    existing = (
        select(following.c.id)
        .where(following.c.user_id == tasks.c.user_id, following.c.id == tasks.c.next_id)
        .scalar_subquery()
    )
    return (
        select(tasks.c.completed, tasks.c.recurrence, tasks.c.next_id, existing.label("next_existing"))
        .where(*_task_matches(False))
        .with_for_update(of=tasks)
    )


def _lock_owner() -> Any:
    return select(users.c.id).where(users.c.id == bindparam("user_id")).with_for_update()


def _next() -> Any:
    """The next occurrence of the task: its fields, due `due_date`, reminded at `remind_at`, one
    further in the series — if its owner may hold one more task (no row otherwise)."""
    counted = _count_in_owner().cte("counted")
    copied = [
        tasks.c[name] for name in ("title", "description", "priority", "tags", "tag_keys", "recurrence", "time_zone")
    ]
    row = select(
        counted.c.id,
        *copied,
        cast(bindparam("due_date"), tasks.c.due_date.type),
        cast(bindparam("remind_at"), tasks.c.remind_at.type),
        tasks.c.occurrence + 1,
    ).where(*_task_matches(False))
    names = ["user_id", *(column.name for column in copied), "due_date", "remind_at", "occurrence"]
    return insert(tasks).from_select(names, row).returning(tasks.c.id)


def _link_next() -> Any:
    return (
        update(tasks)
        .where(*_task_matches(False), tasks.c.next_id.is_(None))
        .values(next_id=bindparam("next_id"))
        .returning(tasks.c.id)
    )


@contextmanager
def _checked_recurrence() -> Iterator[None]:
    try:
        yield
    except CheckViolation as error:
        if error.diag.constraint_name == "ck_tasks_recurrence_due":
            raise RecurrenceNeedsDueDate() from None
        raise


def _update(names: tuple[str, ...], toggle_completed: bool, version_checked: bool, internal: bool = False) -> Any:
    """Set `names` (or flip `completed`); returning the task, with its number in its series when `internal`."""
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
        .returning(*COLUMNS, *((tasks.c.occurrence,) if internal else ()))
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


SEARCH_PREFIX_CHARS = 32


def _contains(column: ColumnElement[Any], needle: str) -> ColumnElement[bool]:
    return func.strpos(func.lower(column), func.lower(bindparam(needle))) > 0


_overdue = and_(tasks.c.due_date < func.now(), tasks.c.completed.is_(False))
_CONDITIONS: dict[str, ColumnElement[bool]] = {
    "completed": tasks.c.completed == bindparam("completed"),
    # What ILIKE '%…%' means in a UTF-8 database (both sides lower-cased, then matched): ILIKE
    # backtracks, text length × pattern length per row; strpos's search does so far less.
    "text": or_(_contains(tasks.c.title, "needle"), _contains(tasks.c.description, "needle")),
    # A long needle's worst case ('b' + 'a' * 199 in a text of a's) still grows with its length:
    # its first SEARCH_PREFIX_CHARS rule out nearly every row first (bench: 1.9 s → 0.6 s, 10 000 rows).
    "long text": or_(
        and_(_contains(tasks.c.title, "needle_prefix"), _contains(tasks.c.title, "needle")),
        and_(_contains(tasks.c.description, "needle_prefix"), _contains(tasks.c.description, "needle")),
    ),
    "priorities": tasks.c.priority == any_(cast(bindparam("priorities"), ARRAY(priority))),
    "due_before": tasks.c.due_date < bindparam("due_before"),
    "due_after": tasks.c.due_date > bindparam("due_after"),
    "overdue": _overdue,
    "not overdue": not_(func.coalesce(_overdue, False)),
    "recurring": tasks.c.recurrence.is_not(None),
    "not recurring": tasks.c.recurrence.is_(None),
    "has_reminder": tasks.c.remind_at.is_not(None),
    "not has_reminder": tasks.c.remind_at.is_(None),
}


def _conditions(filters: Filters, params: dict[str, Any]) -> list[str]:
    """The names of the conditions `filters` need (see _condition), their values in `params`."""
    names = []
    if filters.completed is not None:
        names.append("completed")
        params["completed"] = filters.completed
    if filters.text:
        params["needle"] = filters.text
        if len(filters.text) <= SEARCH_PREFIX_CHARS:
            names.append("text")
        else:
            names.append("long text")
            params["needle_prefix"] = filters.text[:SEARCH_PREFIX_CHARS]
    if filters.priorities:
        names.append("priorities")
        params["priorities"] = list(filters.priorities)
    for index, tag in enumerate(sorted({tag_key(tag) for tag in filters.tags})):
        names.append(f"tag_{index}")
        params[f"tag_{index}"] = tag
    for name in ("due_before", "due_after"):
        if getattr(filters, name) is not None:
            names.append(name)
            params[name] = getattr(filters, name)
    for name in ("overdue", "recurring", "has_reminder"):
        if getattr(filters, name) is not None:
            names.append(name if getattr(filters, name) else f"not {name}")
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
