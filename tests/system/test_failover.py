"""Failover to a streaming replica under load: a primary with a synchronous standby, the primary
crashed and the standby promoted while clients keep sending the bench's mix, retrying as a careful
client does (tests/support/load.py). The service, given both hosts in one multi-host URL with
target_session_attrs=read-write, answers 503 with Retry-After during the switch and then serves
from the new primary, never restarted; the new primary holds exactly what the clients were told:
no acknowledged write lost, no duplicate, no phantom."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from persistence import database, libpq, schema
from tests.support import replication
from tests.support.load import MixedLoad, Request, statuses, stored_tasks, unexpected
from tests.support.service import Service, service_env
from tests.support.tokens import SECRET, mint


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[replication.Server, replication.Server]]:
    user = replication.server_user()
    primary = replication.Server.initialised(user)
    standby: replication.Server | None = None
    try:
        primary.require_synchronous_standby()  # the clone overrides this for itself
        primary.start()
        standby = primary.standby()
        standby.start()
        schema.migrate(primary.url())
        yield primary, standby
    finally:
        primary.remove()
        if standby is not None:
            standby.remove()


def multi_host_url(*servers: replication.Server) -> str:
    hosts = ",".join("127.0.0.1" for _ in servers)
    ports = ",".join(str(server.port) for server in servers)
    return f"postgresql://postgres@/postgres?host={hosts}&port={ports}&target_session_attrs=read-write"


def test_promoting_the_standby_under_load_loses_no_acknowledged_write(
    primary_and_standby: tuple[replication.Server, replication.Server],
) -> None:
    primary, standby = primary_and_standby
    service = Service(service_env(primary.url(), DATABASE_URL=multi_host_url(primary, standby)))
    try:
        with MixedLoad(service.base_url, lambda user: mint(user, secret=SECRET), workers=4) as load:
            load.wait_until(lambda seen: answered(seen) >= 100, timeout=60, what="answers before the crash")
            crashed = time.monotonic()
            primary.crash()
            load.wait_until(
                lambda seen: any(r.status == 503 and r.started > crashed for r in seen),
                timeout=60,
                what="a 503 while no primary is up",
            )
            promoted = time.monotonic()
            standby.promote()
            recovered = load.wait_until(
                lambda seen: answered(seen, after=promoted) >= 1,
                timeout=60,
                what="the first answer from the new primary",
            )
            load.wait_until(
                lambda seen: answered(seen, after=recovered) >= 200, timeout=60, what="answers after the promotion"
            )
        assert service.process.poll() is None, "the service exited during the failover"
    finally:
        service.stop()

    requests = load.requests
    print(f"failover: {len(requests)} requests, {statuses(requests)}")
    assert not unexpected(requests), unexpected(requests)
    assert not load.anomalies, load.anomalies
    unavailable = [r for r in requests if r.status == 503]
    assert all(r.retry_after for r in unavailable), "a 503 without Retry-After"
    assert all(crashed < r.ended for r in unavailable), "a 503 before the primary went away"
    assert all(r.started < recovered for r in unavailable), "a 503 after the service had recovered"
    assert not standby.in_recovery()
    # As the superuser, which row-level security does not bind.
    with psycopg.connect(f"host=127.0.0.1 port={standby.port} user=postgres dbname=postgres") as connection:
        audit = load.audit(stored_tasks(connection, load.users))
    print(audit.line())
    assert audit.clean, audit.line()


def answered(requests: list[Request], *, after: float = 0) -> int:
    return sum(1 for r in requests if r.status is not None and 200 <= r.status < 300 and r.started > after)


def test_new_connections_try_first_the_host_that_last_accepted(database_url: str) -> None:
    """A multi-host URL whose first host takes connections and drops them (as a host that is gone
    costs its connect timeout): once a connection has been made, new ones go straight to the host
    that accepted it."""
    tried: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as gone:
        accepting = threading.Thread(target=_drop_each, args=(gone, tried), daemon=True)
        accepting.start()
        params = conninfo_to_dict(libpq.conninfo(database_url))
        params |= {
            "host": f"127.0.0.1,{params['host']}",
            "port": f"{gone.getsockname()[1]},{params.get('port', '')}",
            "sslmode": "disable",  # else libpq tries the gone host twice, with and without TLS
            "gssencmode": "disable",
        }
        url = "postgresql://?" + urlencode(params)

        async def tries_after_the_first_connection() -> tuple[int, int]:
            db = database.Database(url, pool_size=4)
            await db.open()
            try:
                await db.run(None, "SELECT 1", {})  # the pool's first connections try both hosts
                db.stats()
                before = len(tried)
                # Four at once, each holding its connection a moment: the pool opens more.
                await asyncio.gather(*(db.run(None, "SELECT pg_sleep(0.3)", {}) for _ in range(4)))
                return db.stats()["connections_num"], len(tried) - before
            finally:
                await db.close()

        made, tries = asyncio.run(tries_after_the_first_connection())
    assert made > 0, "the pool opened no more connections; the check needs some"
    assert tries == 0, f"the gone host was tried {tries} times for {made} new connections"


def _drop_each(listener: socket.socket, tried: list[object]) -> None:
    with suppress(OSError):
        while True:
            connection, _ = listener.accept()
            tried.append(connection)
            connection.close()
