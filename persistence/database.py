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
import select
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar, Self, TypeVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

log = logging.getLogger("todo_api")

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
FAIR_SHARE_WAIT_SECONDS = 2.0  # a user over their share waits this long for a slot, then 429
WAITERS_PER_CONNECTION = 20  # more requests than this queued per connection: 503 at once
MAX_LIFETIME_SECONDS = 1800.0
# libpq defaults, unless DATABASE_URL says otherwise: give up connecting after 5 s; notice a
# silent peer on an idle connection (keepalives) and unacknowledged data (tcp_user_timeout).
LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

Row = dict[str, Any]
T = TypeVar("T")

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

# What libpq says when it cannot connect, and the cause a log line names (first match wins).
_CONNECT_FAILURES = (
    ("connection refused", "connection refused"),
    ("no such file or directory", "connection refused"),
    ("timeout expired", "connect timeout"),
    ("too many clients", "too many connections"),
    ("too many connections", "too many connections"),
    ("remaining connection slots", "too many connections"),
    ("read-only", "read-only (a standby, or default_transaction_read_only)"),
    ("hot standby", "read-only (a standby, or default_transaction_read_only)"),
    ("starting up", "starting up or shutting down"),
    ("shutting down", "starting up or shutting down"),
    ("authentication", "authentication failed"),
    ("translate host name", "unknown host"),
)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer in time; the message names the cause."""


class FairShareExceeded(Exception):
    """The user already holds their share of this process's connections and none freed up in time."""


class _Connection(psycopg.AsyncConnection[Any]):
    """Tells its Database whether the last attempt to connect failed, and why: requests then wait
    only briefly for a connection, and the log says the cause once, not once per request. Each
    Database connects through a subclass that names it."""

    database: ClassVar[Database]

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            connection = await super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as error:
            cls.database.connect_failed(_connect_failure(error))
            raise
        cls.database.connect_failed(None)
        return connection


class _FairShare:
    """At most `limit` units of work per user at once; the others wait their turn (FIFO), briefly."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._interested: Counter[str] = Counter()  # holders and waiters: the semaphore lives while > 0

    @asynccontextmanager
    async def slot(self, user_id: str | None, deadline: float | None) -> AsyncIterator[None]:
        if user_id is None or self.limit is None:
            yield
            return
        semaphore = self._slots.get(user_id) or self._slots.setdefault(user_id, asyncio.Semaphore(self.limit))
        self._interested[user_id] += 1
        try:
            if semaphore.locked():
                await self._wait_for(semaphore, deadline)
            else:
                await semaphore.acquire()  # free: returns at once
            try:
                yield
            finally:
                semaphore.release()
        finally:
            self._interested[user_id] -= 1
            if not self._interested[user_id]:
                del self._interested[user_id], self._slots[user_id]

    @staticmethod
    async def _wait_for(semaphore: asyncio.Semaphore, deadline: float | None) -> None:
        wait = FAIR_SHARE_WAIT_SECONDS
        remaining = None if deadline is None else deadline - _now()
        try:
            async with asyncio.timeout(wait if remaining is None else min(wait, remaining)):
                await semaphore.acquire()
        except TimeoutError:
            if remaining is not None and remaining < wait:
                raise DatabaseUnavailable("deadline passed waiting for the user's share of connections") from None
            raise FairShareExceeded() from None


class Database:
    """One application's pool of connections to PostgreSQL, and the rules every unit of work on it
    follows: the caller's user for row-level security, a deadline, and the user's fair share."""

    def __init__(
        self, url: str, *, pool_size: int, statement_timeout_ms: int = 0, max_per_user: int | None = None
    ) -> None:
        """At most `pool_size` connections (made on demand, once `open`); statements are cancelled
        after `statement_timeout_ms` (0: never, and no deadline); a user holds at most `max_per_user`."""
        self._conninfo = conninfo(url)
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[_Connection] | None = None
        self._deadline_seconds = statement_timeout_ms / 1000 + DEADLINE_MARGIN_SECONDS if statement_timeout_ms else None
        self._statement_timeout_ms = statement_timeout_ms
        self._fair_share = _FairShare(max_per_user)
        self._opening: str | None = None  # the statement opening each transaction, decided on first use
        self.unreachable: str | None = None  # why the last attempt to connect failed; None once one succeeds
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
            reconnect_timeout=0,  # a failed connect is retried once, then on the next request's demand
        )
        await self._pool.open()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=1)
            self._pool = None

    def stats(self) -> dict[str, int]:
        """psycopg_pool's figures since the last call (counters) and now (sizes), for /metrics."""
        return self._pool.pop_stats() if self._pool is not None else {}

    def connect_failed(self, cause: str | None) -> None:
        """Note the outcome of an attempt to connect: why it failed, or None once one succeeds."""
        if cause is not None and cause != self.unreachable:
            log.warning("cannot connect to the database: %s", cause)
        elif cause is None and self.unreachable is not None:
            log.info("connected to the database again")
        self.unreachable = cause

    async def run(self, user_id: str | None, sql: str, params: Mapping[str, Any]) -> list[Row]:
        """The rows of one statement run as `user_id`, in one round trip (and one transaction)."""
        async with self._session(user_id) as session:
            return await session.bounded(self._run(session, user_id, sql, params))

    async def _run(self, session: _Session, user_id: str | None, sql: str, params: Mapping[str, Any]) -> list[Row]:
        cursor = psycopg.AsyncClientCursor(session.connection, row_factory=dict_row)
        opening = await self._opening_statement(cursor)
        await cursor.execute(f"{opening}; {sql}", {**params, **self._scope_params(user_id, session.deadline)})
        cursor.nextset()
        return await cursor.fetchall() if cursor.description else []

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
            await cursor.execute("COMMIT")

    async def _begin(self, session: _Session, user_id: str | None) -> None:
        cursor = psycopg.AsyncClientCursor(session.connection, row_factory=dict_row)
        opening = await self._opening_statement(cursor)
        await cursor.execute(f"BEGIN; {opening}", self._scope_params(user_id, session.deadline))

    @asynccontextmanager
    async def _session(self, user_id: str | None) -> AsyncIterator[_Session]:
        """A connection for one unit of work as `user_id`: the user's share, a connection handed out
        oldest waiter first, and errors turned into DatabaseUnavailable naming their cause."""
        if self._pool is None:
            raise RuntimeError("the database pool is not open")
        deadline = None if self._deadline_seconds is None else _now() + self._deadline_seconds
        async with self._fair_share.slot(user_id, deadline):
            session = _Session(self, await self._checkout(self._pool, deadline), deadline)
            try:
                yield session
            except psycopg.Error as error:
                cause = _failure(error)
                if cause is None:
                    await self._give_back(session)
                    raise
                await self._give_back(session, keep=not isinstance(error, errors.ReadOnlySqlTransaction))
                raise DatabaseUnavailable(cause) from error
            except BaseException:
                await self._give_back(session)
                raise
            await self._give_back(session)

    async def _checkout(self, pool: AsyncConnectionPool[_Connection], deadline: float | None) -> _Connection:
        """The next connection for this request, in arrival order, checked without a round trip."""
        while True:
            wait = CHECKOUT_TIMEOUT_SECONDS if deadline is None else deadline - _now()
            if wait <= 0:
                raise DatabaseUnavailable("timeout: no connection within the deadline")
            if self.unreachable is not None:
                wait = min(wait, UNREACHABLE_WAIT_SECONDS)
            try:
                connection = await pool.getconn(timeout=min(wait, CHECKOUT_SLICE_SECONDS))
            except TooManyRequests:
                raise DatabaseUnavailable("pool exhausted: too many requests waiting for a connection") from None
            except PoolTimeout:
                if self.unreachable is None and wait > CHECKOUT_SLICE_SECONDS:
                    continue  # the database answers: this is a busy pool, wait on until the deadline
                raise DatabaseUnavailable(self.unreachable or "pool exhausted: no connection free in time") from None
            except psycopg.OperationalError as error:  # the pool is closed: shutting down
                raise DatabaseUnavailable(type(error).__name__) from None
            if _idle_and_alive(connection):
                return connection
            await self._discard(connection)

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

    def _scope_params(self, user_id: str | None, deadline: float | None) -> dict[str, str]:
        """The user (no user is the empty id, which owns nothing: the policies then admit no row)
        and the statement timeout, shortened to what is left of the deadline."""
        timeout_ms = self._statement_timeout_ms
        if deadline is not None:
            left_ms = int((deadline - _now() - SERVER_MARGIN_SECONDS) * 1000)
            if left_ms <= 0:
                raise DatabaseUnavailable("timeout: no time left within the deadline")
            timeout_ms = min(timeout_ms, left_ms)
        return {"user_id": user_id or "", "timeout": str(timeout_ms)}

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
            self._opening = _AS_USER + (_IN_APP_ROLE if assumes else "")
        return self._opening


def conninfo(url: str) -> str:
    """The libpq connection string for a settings URL (any form libpq takes, several hosts
    included), with our timeouts and keepalives wherever the URL does not set its own."""
    scheme, _, rest = url.partition("://")
    params = conninfo_to_dict(f"{scheme.split('+')[0]}://{rest}")
    return make_conninfo("", **{**LIBPQ_DEFAULTS, **params})


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
            raise DatabaseUnavailable("timeout: no answer within the deadline")
        return task.result()

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        self.abandoned = True
        task.cancel()
        task.add_done_callback(self._discard_when_done)

    def _discard_when_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: the request has had its 503 already
        self.database.discard_later(self.connection)


def _idle_and_alive(connection: _Connection) -> bool:
    """Whether an idle connection still looks usable, without a round trip: nothing may have
    arrived on its socket since it was last used (the server closing it, or a setting change
    such as read-only, make it readable)."""
    pgconn = connection.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    return not poller.poll(0)


def _failure(error: psycopg.Error) -> str | None:
    """The cause, for a log line, when `error` means the database is unavailable; else None."""
    if isinstance(error, errors.ReadOnlySqlTransaction):
        return "read-only (a standby, or default_transaction_read_only)"
    if isinstance(error, errors.QueryCanceled):
        return "statement timeout"
    if isinstance(error, errors.TooManyConnections):
        return "too many connections"
    if isinstance(error, psycopg.OperationalError):
        return "connection lost" if error.sqlstate is None else f"{type(error).__name__} ({error.sqlstate})"
    return None


def _connect_failure(error: psycopg.OperationalError) -> str:
    message = str(error).lower()
    return next((cause for words, cause in _CONNECT_FAILURES if words in message), "cannot connect")


def _now() -> float:
    return asyncio.get_running_loop().time()
