"""An API host that loses its link and then its power in the middle of a transaction sends
nothing more, not even a reset: PostgreSQL would hold the transaction, and the locks every write
of that user needs, until its TCP keepalives found the peer gone (two hours by default). The
service bounds each transaction's idle time by its deadline, so the server ends it. In process,
on the session's PostgreSQL, through a forwarder the test silences."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from persistence.database import Database
from persistence.libpq import conninfo
from tests.support.forwarder import Forwarder

STATEMENT_TIMEOUT_MS = 3000  # the deadline is this plus a margin
ANSWER_SECONDS = 30  # how long the next write may wait: far beyond the deadline


def test_a_transaction_whose_client_vanished_gives_its_locks_up_within_its_deadline(
    database_url: str, forwarder: Forwarder
) -> None:
    user = f"vanishing-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        database = Database(forwarder.url, pool_size=1, statement_timeout_ms=STATEMENT_TIMEOUT_MS)
        await database.open()
        holding = asyncio.Event()

        async def vanishing_write() -> None:
            async with database.transaction(user) as transaction:
                await transaction.execute("INSERT INTO users (id) VALUES (%(user)s)", {"user": user})
                await transaction.execute(  # takes the user's feed head, as every write does
                    "INSERT INTO tasks (user_id, title) VALUES (%(user)s, 'never committed')", {"user": user}
                )
                holding.set()
                await asyncio.Event().wait()  # its host vanishes here

        writing = asyncio.ensure_future(vanishing_write())
        try:
            await holding.wait()
            forwarder.silence()
            await asyncio.to_thread(another_hosts_write, database_url, user)
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
            await database.close()

    asyncio.run(scenario())


def another_hosts_write(database_url: str, user: str) -> None:
    """The user's next write, from another host: it needs the locks the vanished one took."""
    with psycopg.connect(conninfo(database_url), autocommit=True) as connection:
        connection.execute(f"SET statement_timeout = '{ANSWER_SECONDS}s'")
        connection.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT DO NOTHING", [user])
        connection.execute("INSERT INTO tasks (user_id, title) VALUES (%s, 'written')", [user])
