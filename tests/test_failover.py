"""Failover to a streaming replica under write load: a primary with a synchronous standby, the
primary crashed and the standby promoted while clients keep creating tasks. The service, given
both hosts in one multi-host URL with target_session_attrs=read-write, answers 503 with
Retry-After during the switch and then writes to the new primary, never restarted; every
acknowledged write is on the new primary and nothing was stored that was not acknowledged or
in doubt."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from persistence import schema
from tests import replication
from tests.conftest import SECRET, Service, mint, service_env
from tests.load import Outcome, WriteLoad, audit, statuses


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


def test_promoting_the_standby_under_write_load_loses_no_acknowledged_write(
    primary_and_standby: tuple[replication.Server, replication.Server],
) -> None:
    primary, standby = primary_and_standby
    service = Service(service_env(primary.url(), DATABASE_URL=multi_host_url(primary, standby)))
    try:
        with WriteLoad(service.base_url, lambda user: mint(user, secret=SECRET), workers=4, limit=6000) as load:
            load.wait_until(lambda seen: acknowledged(seen) >= 50, timeout=60, what="writes before the crash")
            crashed = time.monotonic()
            primary.crash()
            load.wait_until(
                lambda seen: any(o.status == 503 and o.started > crashed for o in seen),
                timeout=60,
                what="a 503 while no primary is up",
            )
            promoted = time.monotonic()
            standby.promote()
            recovered = load.wait_until(
                lambda seen: acknowledged(seen, after=promoted) >= 1,
                timeout=60,
                what="the first write on the new primary",
            )
            load.wait_until(
                lambda seen: acknowledged(seen, after=recovered) >= 100, timeout=60, what="writes after the promotion"
            )
        assert service.process.poll() is None, "the service exited during the failover"
    finally:
        service.stop()

    outcomes = load.outcomes
    print(f"failover: {len(outcomes)} requests, {statuses(outcomes)}")
    assert {o.status for o in outcomes} <= {201, 503}, statuses(outcomes)
    unavailable = [o for o in outcomes if o.status == 503]
    assert all(o.retry_after for o in unavailable), "a 503 without Retry-After"
    assert all(crashed < o.ended for o in unavailable), "a 503 before the primary went away"
    assert all(o.started < recovered for o in unavailable), "a 503 after the service had recovered"
    assert not standby.in_recovery()
    lost, phantom = audit(outcomes, stored_titles(standby, {o.user for o in outcomes}))
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert not phantom, f"{len(phantom)} writes stored that were never acknowledged nor in doubt"


def acknowledged(outcomes: list[Outcome], *, after: float = 0) -> int:
    return sum(1 for o in outcomes if o.status == 201 and o.started > after)


def stored_titles(server: replication.Server, users: set[str]) -> set[str]:
    # As the superuser, which row-level security does not bind.
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres") as connection:
        rows = connection.execute("SELECT title FROM tasks WHERE user_id = ANY(%s)", [list(users)]).fetchall()
    return {title for (title,) in rows}
