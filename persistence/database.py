"""The connection pool, and statements run as one user.

Isolation is enforced twice: every query says `WHERE user_id = …`, and PostgreSQL row-level
security (migration 0004) admits only the rows of the transaction's `app.user_id`. When the
service logs in as a privileged role (superuser, table owner or BYPASSRLS — as in development),
each transaction also switches to the least-privilege role `todo_api_app`, so the policies bind.

Speed (bench/PROFILE.md): statements are built and compiled by SQLAlchemy Core once, then sent
by psycopg with client-side binding, so that the settings and the statement travel as one
simple-protocol message — one implicit transaction, one round trip after the pool's pre-ping.
The settings are transaction-local, hence safe behind a transaction-mode pooler, and no
statement is prepared server-side (PgBouncer may hand the next one to another server connection).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("todo_api")

APP_ROLE = "todo_api_app"
CONNECT_TIMEOUT_SECONDS = 5
POOL_TIMEOUT_SECONDS = 10  # waiting this long for a free connection means overload: 503

Row = dict[str, Any]

# Opens every transaction: the user for row-level security, the statement timeout and, for
# privileged logins, the least-privilege role.
_AS_USER = "SELECT set_config('app.user_id', %(user_id)s, true), set_config('statement_timeout', %(timeout)s, true)"
_IN_APP_ROLE = f", set_config('role', '{APP_ROLE}', true)"
_PRIVILEGE = """
    SELECT (r.rolsuper OR r.rolbypassrls OR coalesce(pg_has_role(t.tableowner, 'MEMBER'), false)) AS privileged,
           CASE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %(app_role)s) THEN false
                WHEN current_setting('server_version_num')::int >= 160000 THEN pg_has_role(%(app_role)s, 'SET')
                ELSE pg_has_role(%(app_role)s, 'MEMBER') END AS can_assume
    FROM pg_roles AS r
    LEFT JOIN pg_tables AS t ON t.tablename = 'tasks' AND t.schemaname = current_schema()
    WHERE r.rolname = current_user
"""


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer in time."""


class _State:
    engine: AsyncEngine | None = None
    statement_timeout: str = "0"
    scope: str | None = None  # the opening statement, decided on the first connection


_state = _State()


async def open_pool(url: str, *, pool_size: int, statement_timeout_ms: int = 0) -> None:
    """Open the pool (connections are made on demand); statements are cancelled after
    `statement_timeout_ms` (0: never)."""
    _state.engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_recycle=1800,
        pool_reset_on_return=None,  # every statement or transaction of ours ends before check-in
        isolation_level="AUTOCOMMIT",  # transactions are ours: implicit (run) or explicit (transaction)
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "prepare_threshold": None},
    )
    _state.statement_timeout = str(statement_timeout_ms)
    _state.scope = None


async def close_pool() -> None:
    if _state.engine is not None:
        await _state.engine.dispose()
        _state.engine = None


def connections_in_use() -> int:
    """Connections this process has checked out of its pool right now."""
    if _state.engine is None:
        return 0
    return _state.engine.pool.checkedout()  # type: ignore[attr-defined]


async def run(user_id: str | None, sql: str, params: Mapping[str, Any]) -> list[Row]:
    """The rows of one statement run as `user_id`, in one round trip (and one transaction)."""
    async with _cursor() as cursor:
        await cursor.execute(f"{await _scope(cursor)}; {sql}", {**params, **_scope_params(user_id)})
        cursor.nextset()
        return await cursor.fetchall() if cursor.description else []


@asynccontextmanager
async def transaction(user_id: str | None = None) -> AsyncIterator[psycopg.AsyncClientCursor[Row]]:
    """An explicit transaction as `user_id` (no user: no user rows visible), for work that needs
    more than one statement; committed when the block ends without an error."""
    async with _cursor() as cursor:
        await cursor.execute(f"BEGIN; {await _scope(cursor)}", _scope_params(user_id))
        try:
            yield cursor
        except BaseException:
            await cursor.connection.rollback()
            raise
        await cursor.execute("COMMIT")


@asynccontextmanager
async def _cursor() -> AsyncIterator[psycopg.AsyncClientCursor[Row]]:
    """A cursor on a pooled psycopg connection, used directly: SQLAlchemy's pool (pre-ping,
    recycling, on-demand connects that fail fast) without its per-statement machinery."""
    if _state.engine is None:
        raise RuntimeError("the database pool is not open")
    try:
        async with _state.engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            try:
                yield psycopg.AsyncClientCursor(pooled.driver_connection, row_factory=dict_row)
            except psycopg.OperationalError:
                if pooled.driver_connection.broken:
                    pooled.invalidate()  # never hand a broken connection to the next request
                raise
    except (psycopg.OperationalError, exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError) as error:
        raise DatabaseUnavailable(type(error).__name__) from error


def _scope_params(user_id: str | None) -> dict[str, str]:
    # No user is the empty id, which owns nothing: the policies then admit no row.
    return {"user_id": user_id or "", "timeout": _state.statement_timeout}


async def _scope(cursor: psycopg.AsyncClientCursor[Row]) -> str:
    if _state.scope is None:
        await cursor.execute(_PRIVILEGE, {"app_role": APP_ROLE})
        privilege = await cursor.fetchone()
        assert privilege is not None
        if privilege["privileged"] and not privilege["can_assume"]:
            log.warning(
                "serving as a privileged role that cannot SET ROLE %s: row-level security is bypassed", APP_ROLE
            )
        assumes = privilege["privileged"] and privilege["can_assume"]
        _state.scope = _AS_USER + (_IN_APP_ROLE if assumes else "")
    return _state.scope
