"""Live streams while the database is away: a stream goes on sending its comment lines while
its reads of the database fail or hang; a process whose LISTEN connection is lost goes on waking
its streams by polling, at once (the connection may have been deaf for seconds before it was
found lost, as with a primary gone silent, and a new one cannot be had until the database is
back); and a silent database is found out within the listener's own check, not after psycopg's
cancellation of the check has given up. With connections through a forwarder the test cuts or
silences, on the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import suppress

import psycopg
import pytest

from handlers import live
from handlers.live import Live, Subscription
from persistence import changes, notifications
from persistence.database import Database
from persistence.libpq import conninfo
from persistence.notifications import Listener
from tests.support.forwarder import Forwarder
from tests.support.service import Service
from tests.support.sync import EventStream
from tests.support.users import User

WAKE_DEADLINE = 30.0  # far beyond a poll or a heartbeat; far below the safety poll or read bound the tests set


def write(url: str, user: str) -> None:
    """A change of `user`'s tasks, committed by another process's connection."""
    with psycopg.connect(conninfo(url), autocommit=True) as connection:
        connection.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT DO NOTHING", [user])
        connection.execute("INSERT INTO tasks (user_id, title) VALUES (%s, 'changed elsewhere')", [user])


async def woken(stream: Subscription, what: str) -> None:
    try:
        async with asyncio.timeout(WAKE_DEADLINE):
            await stream.wake.wait()
    except TimeoutError:
        raise AssertionError(f"no wake-up within {WAKE_DEADLINE:.0f} s: {what}") from None


def test_streams_are_polled_for_at_once_when_the_listening_connection_is_lost(
    database_url: str, forwarder: Forwarder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While notifications arrive, the poller's next look would come only after this long.
    monkeypatch.setattr(live, "SAFETY_POLL_SECONDS", 3600.0)
    user = f"fallback-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        database = Database(database_url, pool_size=2)
        await database.open()
        streams = Live(database, listen_url=forwarder.url, max_per_user=10)
        await streams.start()
        try:
            for _ in range(600):
                if streams.listening:
                    break
                await asyncio.sleep(0.05)
            assert streams.listening, "the forwarded connection never delivered a notification"
            stream = streams.open(user)
            await asyncio.to_thread(write, database_url, user)
            await woken(stream, "a change notified while listening")
            stream.wake.clear()
            stream.head = (await changes.head(database, user)).seq

            forwarder.cut()
            await asyncio.to_thread(write, database_url, user)  # notified to nobody
            await woken(stream, "a change made after the listening connection was lost")
            assert not streams.listening
            stream.close()
        finally:
            await streams.stop()
            await database.close()

    asyncio.run(scenario())


def test_a_silent_database_is_found_out_before_a_query_timed_out_by_asyncio_even_returns(
    database_url: str, forwarder: Forwarder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg answers the cancellation of a query a silent server never answers by sending a
    cancel request and waiting for the query's end, seconds each: a listener that waited for that
    would believe notifications still reach it all the while."""
    monkeypatch.setattr(notifications, "CHECK_SECONDS", 0.2)

    async def scenario() -> None:
        flags: asyncio.Queue[bool] = asyncio.Queue()

        async def send_probe(payload: str) -> None:
            async with await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as direct:
                await direct.execute("SELECT pg_notify(%s, %s)", [changes.CHANNEL, payload])

        listener = Listener(
            forwarder.url, on_user=lambda _: None, send_probe=send_probe, on_delivering=flags.put_nowait
        )
        listening = asyncio.ensure_future(listener.run())
        reference = await psycopg.AsyncConnection.connect(conninfo(forwarder.url), autocommit=True)
        try:
            assert await asyncio.wait_for(flags.get(), WAKE_DEADLINE) is True, "the listener never delivered"
            forwarder.silence()

            async def bounded_by_asyncio() -> None:
                with suppress(TimeoutError, psycopg.Error):
                    async with asyncio.timeout(notifications.ANSWER_SECONDS):
                        await reference.execute("SELECT 1")

            timed_out = asyncio.ensure_future(bounded_by_asyncio())
            assert await asyncio.wait_for(flags.get(), WAKE_DEADLINE) is False
            # The listener gave up first, without waiting for psycopg's cancellation (which, once the
            # reference's asyncio timeout fired, keeps it busy for seconds more).
            assert not timed_out.done(), "the silence was found out only as late as psycopg's cancellation allows"
            await reference.close()
            timed_out.cancel()
            await asyncio.gather(timed_out, return_exceptions=True)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await reference.close()

    asyncio.run(scenario())


def test_a_stream_sends_its_comment_lines_while_a_read_waits_on_a_silent_database(
    start_service: Callable[..., Service], database_url: str, forwarder: Forwarder, alice: User
) -> None:
    streaming = start_service(
        DATABASE_URL=forwarder.url,  # its reads go through the forwarder; notifications come straight
        LISTEN_DATABASE_URL=database_url,
        STREAM_HEARTBEAT_SECONDS="1",
        DB_STATEMENT_TIMEOUT_MS="120000",  # a read on the silent database waits two minutes
    )
    try:
        with EventStream(streaming.base_url, alice.token) as stream:
            alice.create(title="seen while the database answers")
            assert stream.next(timeout=WAKE_DEADLINE).type == "upsert"
            forwarder.silence()
            alice.create(title="wakes the stream, whose read then hangs")
            comments = 0
            while comments < 3:
                event = stream.next(timeout=WAKE_DEADLINE, comments=True)
                assert event is not None and event.type == ":", event
                comments += 1
    finally:
        forwarder.cut()  # before the service's stop, which would wait on its silenced reads
        streaming.stop()
