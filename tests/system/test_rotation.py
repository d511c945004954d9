"""Rotating every secret under load, as docs/operations.md's procedure says, without one 401, 400 or 5xx.

Two instances serve behind a balancer that drains an instance before stopping it (as a platform's
rolling deploy does). Users page through their tasks with cursors (each page from another
instance than the one before) and complete tasks; a scraper reads /metrics. Four rolling
deploys then stage, switch to and retire a new shared secret (BETTER_AUTH_SECRETS), cursor secret
(CURSOR_SECRETS), METRICS_TOKEN and database login, while the frontend (here: the test) starts
signing with the new shared secret once every instance accepts it.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from persistence.database import APP_ROLE
from tests.support.service import Service, service_env
from tests.support.tokens import mint

OLD, NEW = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
CURSOR_OLD, CURSOR_NEW = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
METRICS_OLD, METRICS_NEW = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
USERS = 3
REQUESTS_PER_PHASE = 40


class Balancer:
    """Round robin over the instances in rotation; `drain` takes one out, waits for the requests it
    is answering, then stops it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._rotation: list[Service] = []
        self._busy: Counter[int] = Counter()
        self._turn = 0

    @contextmanager
    def instance(self) -> Iterator[Service]:
        with self._changed:
            service = self._rotation[self._turn % len(self._rotation)]
            self._turn += 1
            self._busy[id(service)] += 1
        try:
            yield service
        finally:
            with self._changed:
                self._busy[id(service)] -= 1
                self._changed.notify_all()

    def add(self, service: Service) -> None:
        with self._changed:
            self._rotation.append(service)

    def drain(self, service: Service) -> None:
        with self._changed:
            self._rotation.remove(service)
            assert self._changed.wait_for(lambda: self._busy[id(service)] == 0, timeout=30)
        service.stop()

    def instances(self) -> list[Service]:
        with self._changed:
            return list(self._rotation)


@dataclass
class Load:
    """Users and a scraper calling through the balancer until stopped; every answer recorded by phase."""

    balancer: Balancer
    phase: str = "before"
    auth_secret: str = OLD
    metrics_token: str = METRICS_OLD
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    cursors: dict[str, tuple[str, str]] = field(default_factory=dict)  # a user's cursor signed in each phase
    stopped: threading.Event = field(default_factory=threading.Event)

    def call(self, what: str, method: str, path: str, token: str, **options: object) -> httpx.Response | None:
        phase = self.phase
        try:
            with self.balancer.instance() as service:
                response = httpx.request(
                    method,
                    service.base_url + path,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                    **options,  # type: ignore[arg-type]
                )
        except httpx.TransportError:
            self.answers.append((phase, what, 0))
            return None
        self.answers.append((phase, what, response.status_code))
        return response

    def user(self, user_id: str) -> None:
        while not self.stopped.is_set():
            token = mint(user_id, secret=self.auth_secret)
            first = self.call("list", "GET", "/api/tasks", token, params={"limit": 2})
            if first is None or "next" not in first.links:
                continue
            cursor = parse_qs(urlsplit(first.links["next"]["url"]).query)["cursor"][0]
            self.cursors.setdefault(self.phase, (user_id, cursor))
            self.call("next page", "GET", "/api/tasks", token, params={"limit": 2, "cursor": cursor})
            task = first.json()[0]
            self.call("complete", "PATCH", f"/api/tasks/{task['id']}/complete", token, json={})

    def scraper(self) -> None:
        while not self.stopped.is_set():
            self.call("metrics", "GET", "/metrics", self.metrics_token)
            self.stopped.wait(0.05)

    def has_answered(self, phase: str) -> bool:
        return sum(1 for answer in list(self.answers) if answer[0] == phase) >= REQUESTS_PER_PHASE


@pytest.fixture
def logins(db: Engine) -> Iterator[tuple[str, str]]:
    """Two login roles that can only be the service's least-privilege role: the database password
    rotates by moving from one to the other."""
    names = tuple(f"todo_api_login_{uuid.uuid4().hex[:6]}" for _ in range(2))
    with db.begin() as connection:
        for name in names:
            connection.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{secrets.token_hex(16)}' IN ROLE {APP_ROLE}"))
    yield names[0], names[1]
    with db.begin() as connection:
        for name in names:
            connection.execute(text(f"DROP ROLE IF EXISTS {name}"))


def as_login(database_url: str, login: str) -> str:
    return make_url(database_url).set(username=login, password=None).render_as_string(hide_password=False)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_rotating_every_secret_and_the_database_login_under_load_refuses_nothing(
    database_url: str, db: Engine, logins: tuple[str, str]
) -> None:
    login_a, login_b = logins
    configs = {
        "before": ("1:" + OLD, "1:" + CURSOR_OLD, METRICS_OLD, login_a),
        # Every instance accepts the new secrets before anything signs with them.
        "stage": (f"2:{NEW},1:{OLD}", f"1:{CURSOR_OLD},2:{CURSOR_NEW}", f"{METRICS_OLD},{METRICS_NEW}", login_b),
        # The new cursor secret signs; the old one still verifies what was signed before.
        "switch": (f"2:{NEW},1:{OLD}", f"2:{CURSOR_NEW},1:{CURSOR_OLD}", f"{METRICS_NEW},{METRICS_OLD}", login_b),
        "retire": ("2:" + NEW, "2:" + CURSOR_NEW, METRICS_NEW, login_b),
    }

    def start(phase: str) -> Service:
        auth, cursor, metrics, login = configs[phase]
        env = service_env(
            database_url,
            DATABASE_URL=as_login(database_url, login),
            BETTER_AUTH_SECRET="",
            BETTER_AUTH_SECRETS=auth,
            CURSOR_SECRET="",
            CURSOR_SECRETS=cursor,
            METRICS_TOKEN=metrics,
        )
        service = Service(env)
        service.wait_until_answering("/ready")
        return service

    balancer = Balancer()
    load = Load(balancer)
    for _ in range(2):
        balancer.add(start("before"))
    users = [f"rotation-{uuid.uuid4().hex[:8]}" for _ in range(USERS)]
    for user in users:
        with balancer.instance() as service:
            for title in ("one", "two", "three"):
                created = httpx.post(
                    service.base_url + "/api/tasks",
                    headers={"Authorization": f"Bearer {mint(user, secret=OLD)}"},
                    json={"title": title},
                )
                assert created.status_code == 201, created.text
    threads = [threading.Thread(target=load.user, args=(user,)) for user in users]
    threads.append(threading.Thread(target=load.scraper))
    try:
        for thread in threads:
            thread.start()
        for phase in ("before", *[name for name in configs if name != "before"]):
            if phase != "before":
                for old in balancer.instances():  # a rolling deploy, one instance at a time
                    balancer.add(start(phase))
                    balancer.drain(old)
            load.phase = phase
            if phase == "stage":  # Better Auth signs with the new secret; the scraper has the new token
                load.auth_secret, load.metrics_token = NEW, METRICS_NEW
            if phase == "retire":
                with db.begin() as connection:
                    connection.execute(text(f"ALTER ROLE {login_a} NOLOGIN"))
            wait_for(partial(load.has_answered, phase), f"{REQUESTS_PER_PHASE} requests in {phase}")
    finally:
        load.stopped.set()
        for thread in threads:
            thread.join(timeout=60)
    try:
        refused = Counter((phase, what, status) for phase, what, status in load.answers if status not in (200, 201))
        assert not refused, refused
        assert {phase for phase, what, _ in load.answers if what == "next page"} == set(configs)
        assert {phase for phase, what, _ in load.answers if what == "metrics"} == set(configs)

        # The old secrets and login are gone for good: each would now be refused.
        [service, _] = balancer.instances()
        user, cursor = load.cursors["before"]
        old_token = {"Authorization": f"Bearer {mint(user, secret=OLD)}"}
        assert httpx.get(service.base_url + "/api/tasks", headers=old_token).status_code == 401
        new_token = {"Authorization": f"Bearer {mint(user, secret=NEW)}"}
        next_page = {"limit": 2, "cursor": load.cursors["switch"][1]} if load.cursors["switch"][0] == user else None
        stale = httpx.get(service.base_url + "/api/tasks", headers=new_token, params={"limit": 2, "cursor": cursor})
        assert stale.status_code == 400
        if next_page:  # the same user's cursor signed with the new secret still works
            assert httpx.get(service.base_url + "/api/tasks", headers=new_token, params=next_page).status_code == 200
        old_scraper = {"Authorization": f"Bearer {METRICS_OLD}"}
        assert httpx.get(service.base_url + "/metrics", headers=old_scraper).status_code == 401
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            psycopg.connect(as_login(database_url, login_a).replace("+psycopg", ""), connect_timeout=5).close()
    finally:
        for service in balancer.instances():
            service.stop()
