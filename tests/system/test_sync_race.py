"""The feed's guarantee, raced (SPEC "Sync"): while 8 writers on two processes create, change,
complete and delete one user's tasks through a service with two workers, followers of the feed
(one from the start, one whose snapshot begins mid-race, one on the live stream) end equal to
the server — every run — and none ever sees a task go back to an older state."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.service import Service
from tests.support.sync import EventStream, Replica, server_tasks, write_randomly
from tests.support.tokens import mint

WRITE_SECONDS = 8
PROCESSES = 2
THREADS_PER_PROCESS = 4


class Follower(threading.Thread):
    """Follows the feed in small pages, as fast as it can, until stopped; records, per task, the
    `updated_at` of every state it applied (they must never go back)."""

    def __init__(self, http: httpx.Client, *, limit: int, start_after: float = 0) -> None:
        super().__init__(daemon=True)
        self.http, self.limit, self.start_after = http, limit, start_after
        self.replica = Replica()
        self.seen: dict[int, list[datetime]] = {}
        self.pages = 0
        self.stop = threading.Event()

    def run(self) -> None:
        time.sleep(self.start_after)  # a follower that arrives mid-race starts with a snapshot then
        while not self.stop.is_set():
            self.catch_up()

    def catch_up(self) -> None:
        for page in self.replica.follow(self.http, limit=self.limit):
            self.pages += 1
            for entry in page:
                if entry["type"] == "upsert":
                    updated = datetime.fromisoformat(entry["task"]["updated_at"])
                    self.seen.setdefault(entry["task"]["id"], []).append(updated)


def test_followers_equal_the_server_while_8_writers_race_over_2_processes(
    start_service: Callable[..., Service], db: Engine
) -> None:
    service = start_service("--workers", "2", DB_MAX_PER_USER="16")
    user = f"race-{uuid.uuid4().hex[:10]}"
    token = mint(user, ttl=3600)
    http = httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    seeds = [http.post("/api/tasks", json={"title": f"seed {n}"}).json()["id"] for n in range(10)]

    live = Replica()
    live.follow(http)
    stream = EventStream(service.base_url, token, **{"Last-Event-ID": live.token or ""})
    followers = [Follower(http, limit=5), Follower(http, limit=3, start_after=WRITE_SECONDS / 3)]
    for follower in followers:
        follower.start()

    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        runs = [
            pool.apply_async(write_randomly, (service.base_url, token, seeds, WRITE_SECONDS, seed, THREADS_PER_PROCESS))
            for seed in range(PROCESSES)
        ]
        statuses = Counter(status for run in runs for status in run.get(timeout=WRITE_SECONDS + 120))
    print(f"writes answered: {dict(statuses)}")
    assert set(statuses) <= {200, 201, 204, 404}, statuses
    assert statuses[201] > 50 and statuses[204] > 10  # the race had creates and deletes to miss

    for follower in followers:
        follower.stop.set()
        follower.join(60)
        follower.catch_up()
    truth = server_tasks(http)
    with db.connect() as connection:
        stored = dict(connection.execute(text("SELECT id, version FROM tasks WHERE user_id = :u"), {"u": user}).all())
    assert set(truth) == set(stored), "the list route and the database disagree"

    for follower in followers:
        assert follower.replica.tasks == truth
        for task_id, states in follower.seen.items():
            assert states == sorted(states), f"task {task_id} went back to an older state: {states}"
    print(f"feed pages read: {[follower.pages for follower in followers]}")

    # The stream: every event applied in order ends in the same state.
    deadline = time.monotonic() + 30
    events = 0
    while live.tasks != truth:
        event = stream.next(timeout=max(0.1, deadline - time.monotonic()))
        assert event is not None, "the stream ended"
        live.apply(event.data)
        events += 1
    stream.close()
    print(f"stream events applied: {events}; tasks at the end: {len(truth)}")
    fresh = Replica()
    fresh.follow(http, limit=7)
    assert fresh.tasks == truth
    http.close()
