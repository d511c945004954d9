"""The connection pool, and statements run as one user.

Isolation is enforced twice: every query says `WHERE user_id = …`, and PostgreSQL row-level
security (migration 0004) admits only the rows of the transaction's `app.user_id`. When the
service logs in as a privileged role (superuser, table owner or BYPASSRLS — as in development),
each transaction also switches to the least-privilege role `todo_api_app`, so the policies bind.

Speed (bench/PROFILE.md): statements are built and compiled by SQLAlchemy Core once, then sent
by psycopg with client-side binding, so that the settings and the statement travel as one
simple-protocol message — one implicit transaction, one round trip. The settings are
transaction-local, hence safe behind a transaction-mode pooler, and no statement is prepared
server-side (PgBouncer may hand the next one to another server connection).

Bounds (SPEC "Bounds"): connections are handed out by psycopg_pool, oldest waiter first; a
connection whose idle socket has become readable (the server closed it, or reported a setting
change such as read-only) is discarded without a round trip; every unit of work (`run`, or a
whole `transaction`) ends within the statement timeout plus a margin, and a connection that
misses that deadline is discarded, never reused; each user holds at most `max_per_user`
connections of this process at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar, Self, TypeVar

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from persistence.errors import BudgetExceeded, DatabaseUnavailable, OutcomeUnknown
from persistence.fair_share import FairShare
from persistence.libpq import connect_failure, conninfo, failure, first_host, idle_and_alive

log = logging.getLogger(__name__)

APP_ROLE = "todo_api_app"
DEADLINE_MARGIN_SECONDS = 1.0  # beyond the statement timeout: the server's own cancel arrives first
# The server cancels a statement this long before the unit's deadline at the latest: a statement
# still running when the service gives up could otherwise commit after its 503.
SERVER_MARGIN_SECONDS = 0.25
CHECKOUT_TIMEOUT_SECONDS = 10.0  # without a statement timeout there is no deadline, but waiting ends
UNREACHABLE_WAIT_SECONDS = 0.5  # while connecting fails, a request waits only this long for a connection
# A waiter looks up after this long: connecting may have started to fail meanwhile (the pool does
# not wake its waiters for that), and an outage must be a prompt 503, not the whole deadline.
CHECKOUT_SLICE_SECONDS = 1.0
WAITERS_PER_CONNECTION = 20  # more requests than this queued per connection: 503 at once
MAX_LIFETIME_SECONDS = 1800.0
# psycopg_pool closes one connection left idle for this long, each time this long passes: after a
# storm of replaced connections, the pool is back to its working size within a minute.
MAX_IDLE_SECONDS = 4.0

Row = dict[str, Any]
T = TypeVar("T")

# Opens every transaction: the user for row-level security, the statement timeout and, for
# privileged logins, the least-privilege role. The same bound on the transaction's idle time
# ends one whose client vanished mid-way (a host that lost power sends not even a reset), which
# PostgreSQL would otherwise hold, with the locks every write of that user needs, until its TCP
# keepalives found the peer gone: two hours by default.
_AS_USER = (
    "SELECT set_config('app.user_id', %(user_id)s, true), set_config('statement_timeout', %(timeout)s, true), "
    "set_config('idle_in_transaction_session_timeout', %(timeout)s, true)"
)
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


async def _in_utc(connection: psycopg.AsyncConnection[Any]) -> None:
    """Each new connection's session speaks UTC, whatever the server's default: psycopg loads
    instants in the session's time zone, and in "UTC" on its fast path (a third of the cost of
    loading them in a named zone, "Etc/UTC" included), already as the API renders them. A pooler
    in transaction mode keeps the setting, as it keeps any client's TimeZone."""
    await connection.execute("SET TimeZone TO 'UTC'")


class _Connection(psycopg.AsyncConnection[Any]):
    """Tells its Database whether the last attempt to connect failed, and why: requests then wait
    only briefly for a connection, and the log says the cause once, not once per request. Each
    Database connects through a subclass that names it."""

    database: ClassVar[Database]

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            connection = await super().connect(first_host(conninfo, cls.database.accepted), **kwargs)
        except psycopg.OperationalError as error:
            cls.database.connect_failed(connect_failure(error))
            raise
        cls.database.connect_failed(None)
        cls.database.accepted = (connection.info.host, str(connection.info.port))
        return connection


class Database:
    """One application's pool of connections to PostgreSQL, and the rules every unit of work on it
    follows: the caller's user for row-level security, a deadline, and the user's fair share."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        statement_timeout_ms: int = 0,
        max_per_user: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """At most `pool_size` connections (made on demand, once `open`); statements are cancelled
        after `statement_timeout_ms` (0: never, and no deadline); a user holds at most `max_per_user`;
        every transaction has the server `settings` given (`app.…` names the migrations read)."""
        self._conninfo = conninfo(url)
        self._settings = dict(settings or {})
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[_Connection] | None = None
        self._deadline_seconds = statement_timeout_ms / 1000 + DEADLINE_MARGIN_SECONDS if statement_timeout_ms else None
        self._statement_timeout_ms = statement_timeout_ms
        self._fair_share = FairShare(max_per_user, pool_size)
        self._answered_at = -math.inf  # when the database last answered a statement (loop time)
        self._opening: str | None = None  # the statement opening each transaction, decided on first use
        self.unreachable: str | None = None  # why the last attempt to connect failed; None once one succeeds
        self.accepted: tuple[str, str] | None = None  # (host, port) of the last connection made
        self._discarding: set[asyncio.Task[None]] = set()  # a reference keeps each task alive until done

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(
            self._conninfo,
            connection_class=type("Connection", (_Connection,), {"database": self}),
            kwargs={"autocommit": True, "prepare_threshold": None},  # transactions are ours; see the docstring
            min_size=1,
            max_size=self._pool_size,
            open=False,
            name="todo_api",
            max_waiting=self._pool_size * WAITERS_PER_CONNECTION,
            max_lifetime=MAX_LIFETIME_SECONDS,
            max_idle=MAX_IDLE_SECONDS,
            reconnect_timeout=0,  # a failed connect is retried once, then on the next request's demand
            configure=_in_utc,
        )
        await self._pool.open()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=1)
            self._pool = None

    def stats(self) -> dict[str, int]:
        """psycopg_pool's figures since the last call (counters) and now (sizes), for /metrics."""
        return self._pool.pop_stats() if self._pool is not None else {}

    def answered_since(self, moment: float) -> bool:
        """Whether the database answered a statement after `moment` (event loop time)."""
        return self._answered_at > moment

    def connect_failed(self, cause: str | None) -> None:
        """Note the outcome of an attempt to connect: why it failed, or None once one succeeds."""
        if cause is not None and cause != self.unreachable:
            log.warning("cannot connect to the database: %s", cause)
        elif cause is None and self.unreachable is not None:
            log.info("connected to the database again")
        self.unreachable = cause

    async def run(
        self, user_id: str | None, sql: str, params: Mapping[str, Any], *, timeout_ms: int | None = None
    ) -> list[Row]:
        """The rows of one statement run as `user_id`, in one round trip (and one transaction).
        With `timeout_ms`, a budget of its own tighter than the statement timeout: a statement
        that outruns it raises BudgetExceeded."""
        async with self._session(user_id) as session:
            session.committing = True  # one statement, its own transaction
            return await session.bounded(self._run(session, user_id, sql, params, timeout_ms))

    async def _run(
        self, session: _Session, user_id: str | None, sql: str, params: Mapping[str, Any], budget_ms: int | None
    ) -> list[Row]:
        cursor = psycopg.AsyncClientCursor(session.connection, row_factory=dict_row)
        opening = await self._opening_statement(cursor)
        timeout_ms = self._timeout_ms(session.deadline)
        if budget_ms is not None and (timeout_ms == 0 or budget_ms < timeout_ms):
            timeout_ms, session.budgeted = budget_ms, True
        await cursor.execute(f"{opening}; {sql}", {**params, **self._scope_params(user_id, timeout_ms)})
        cursor.nextset()
        result = cursor.pgresult  # columns or none, read without building `description`'s objects
        return await cursor.fetchall() if result is not None and result.nfields else []

    @asynccontextmanager
    async def transaction(self, user_id: str | None = None) -> AsyncIterator[Transaction]:
        """An explicit transaction as `user_id` (no user: no user rows visible), for work that needs
        more than one statement; committed when the block ends without an error."""
        async with self._session(user_id) as session:
            cursor = Transaction(session)
            await session.bounded(self._begin(session, user_id))
            try:
                yield cursor
            except BaseException:
                if session.usable:
                    with suppress(psycopg.Error, DatabaseUnavailable):
                        await session.bounded(session.connection.rollback())
                raise
            session.committing = True
            await cursor.execute("COMMIT")

    async def _begin(self, session: _Session, user_id: str | None) -> None:
        cursor = psycopg.AsyncClientCursor(session.connection, row_factory=dict_row)
        opening = await self._opening_statement(cursor)
        await cursor.execute(f"BEGIN; {opening}", self._scope_params(user_id, self._timeout_ms(session.deadline)))

    @asynccontextmanager
    async def _session(self, user_id: str | None) -> AsyncIterator[_Session]:
        """A connection for one unit of work as `user_id`: the user's share, a connection handed out
        oldest waiter first, and errors turned into DatabaseUnavailable naming their cause."""
        if self._pool is None:
            raise RuntimeError("the database pool is not open")
        deadline = None if self._deadline_seconds is None else _now() + self._deadline_seconds
        async with self._fair_share.slot(user_id, deadline or _now() + CHECKOUT_TIMEOUT_SECONDS, self):
            session = _Session(self, await self._checkout(self._pool, deadline), deadline)
            try:
                yield session
            except psycopg.Error as error:
                over_budget = session.budgeted and isinstance(error, errors.QueryCanceled)
                cause = None if over_budget else failure(error)
                if cause is None:
                    self._answered_at = _now()
                    await self._give_back(session)
                    if over_budget:
                        raise BudgetExceeded(str(error)) from None
                    raise
                await self._give_back(session, keep=not isinstance(error, errors.ReadOnlySqlTransaction))
                # Reported by the server (a SQLSTATE), the transaction was rolled back; lost, who knows.
                unknown = session.committing and error.sqlstate is None
                raise (OutcomeUnknown if unknown else DatabaseUnavailable)(cause) from error
            except BaseException:
                await self._give_back(session)
                raise
            self._answered_at = _now()
            await self._give_back(session)

    async def _checkout(self, pool: AsyncConnectionPool[_Connection], deadline: float | None) -> _Connection:
        """The next connection for this request, in arrival order, checked without a round trip."""
        since = _now()
        while True:
            wait = CHECKOUT_TIMEOUT_SECONDS if deadline is None else deadline - _now()
            if wait <= 0:
                raise DatabaseUnavailable("timeout: no connection within the deadline")
            if self.unreachable is not None:
                wait = min(wait, UNREACHABLE_WAIT_SECONDS)
            try:
                connection = await pool.getconn(timeout=min(wait, CHECKOUT_SLICE_SECONDS))
            except TooManyRequests:
                raise DatabaseUnavailable(self._busy(since, "too many requests waiting for a connection")) from None
            except PoolTimeout:
                if self.unreachable is None and wait > CHECKOUT_SLICE_SECONDS:
                    continue  # the database answers: this is a busy pool, wait on until the deadline
                raise DatabaseUnavailable(self.unreachable or self._busy(since, "no connection free in time")) from None
            except psycopg.OperationalError as error:  # the pool is closed: shutting down
                raise DatabaseUnavailable(type(error).__name__) from None
            if idle_and_alive(connection):
                return connection
            await self._discard(connection)

    def _busy(self, since: float, why: str) -> str:
        """Why no connection was free: a busy pool, or a database that stopped answering while
        every connection waits for it."""
        if self.answered_since(since):
            return f"pool exhausted: {why}"
        return f"timeout: no answer from the database, every connection waits for it ({why})"

    async def _give_back(self, session: _Session, *, keep: bool = True) -> None:
        """Return the session's connection to the pool, or discard it when it is in any doubt."""
        if session.abandoned or self._pool is None:
            return
        connection = session.connection
        if keep and not connection.broken and connection.pgconn.transaction_status == TransactionStatus.IDLE:
            await self._pool.putconn(connection)
        else:
            await self._discard(connection)

    async def _discard(self, connection: _Connection) -> None:
        """Close `connection` and let the pool replace it."""
        await connection.close()
        if self._pool is not None:
            await self._pool.putconn(connection)

    def discard_later(self, connection: _Connection) -> None:
        task = asyncio.ensure_future(self._discard(connection))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    def _timeout_ms(self, deadline: float | None) -> int:
        """The statement timeout (0: none), shortened to what is left of the deadline."""
        if deadline is None:
            return self._statement_timeout_ms
        left_ms = int((deadline - _now() - SERVER_MARGIN_SECONDS) * 1000)
        if left_ms <= 0:
            raise DatabaseUnavailable("timeout: no time left within the deadline")
        return min(self._statement_timeout_ms, left_ms)

    def _scope_params(self, user_id: str | None, timeout_ms: int) -> dict[str, str]:
        """The user (no user is the empty id, which owns nothing: the policies then admit no row)
        and the statement timeout."""
        return {"user_id": user_id or "", "timeout": str(timeout_ms), **self._settings}

    async def _opening_statement(self, cursor: psycopg.AsyncClientCursor[Row]) -> str:
        if self._opening is None:
            await cursor.execute(_PRIVILEGE, {"app_role": APP_ROLE})
            privilege = await cursor.fetchone()
            assert privilege is not None
            if privilege["privileged"] and not privilege["can_assume"]:
                log.warning(
                    "serving as a privileged role that cannot SET ROLE %s: row-level security is bypassed", APP_ROLE
                )
            assumes = privilege["privileged"] and privilege["can_assume"]
            settings = "".join(f", set_config('{name}', %({name})s, true)" for name in self._settings)
            self._opening = _AS_USER + settings + (_IN_APP_ROLE if assumes else "")
        return self._opening


class Transaction:
    """The cursor of an explicit transaction; every statement is bounded by the unit's deadline."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._cursor = psycopg.AsyncClientCursor(session.connection, row_factory=dict_row)

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        await self._session.bounded(self._cursor.execute(sql, params))

    async def fetchone(self) -> Row | None:
        return await self._cursor.fetchone()  # from the result already received: no I/O

    async def fetchall(self) -> list[Row]:
        return await self._cursor.fetchall()

    @property
    def description(self) -> Any:
        return self._cursor.description


class _Session:
    """One connection held for one unit of work, and the deadline that unit must meet."""

    def __init__(self, database: Database, connection: _Connection, deadline: float | None) -> None:
        self.database = database
        self.connection = connection
        self.deadline = deadline
        self.abandoned = False  # the deadline passed mid-statement: the connection is being discarded
        self.committing = False  # the statement under way commits (or is the whole transaction)
        self.budgeted = False  # its statement timeout is a budget of the statement's own (run's timeout_ms)

    @property
    def usable(self) -> bool:
        return not self.abandoned and not self.connection.broken

    async def bounded(self, work: Awaitable[T]) -> T:
        """`work`'s result, or DatabaseUnavailable when the deadline passes first. The work runs as
        a task of its own, so that psycopg's cancellation of a query that never answers (which
        can wait seconds for a frozen server) delays neither this request nor its 503."""
        if self.deadline is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait((task,), timeout=max(0.0, self.deadline - _now()))
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise (OutcomeUnknown if self.committing else DatabaseUnavailable)("timeout: no answer within the deadline")
        return task.result()

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        self.abandoned = True
        task.cancel()
        task.add_done_callback(self._discard_when_done)

    def _discard_when_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: the request has had its 503 already
        self.database.discard_later(self.connection)


def _now() -> float:
    return asyncio.get_running_loop().time()
