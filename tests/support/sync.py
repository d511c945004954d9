"""Clients of the change feed for tests: a replica that applies pages, and a live stream reader."""

from __future__ import annotations

import base64
import json
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from handlers import cursors
from persistence.tables import PRIORITIES
from tests.support import TLS
from tests.support.tokens import SECRET

CHANGE_KEYS = cursors.keyring([SECRET], cursors.CHANGE_TOKEN)  # sign change tokens as the test service does


def token_payload(token: str) -> list[Any]:
    """What a change token says: [epoch, seq, issued, (snapshot start)]."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload: list[Any] = json.loads(raw[CHANGE_KEYS.digest_bytes :])
    return payload


@dataclass
class Replica:
    """What a client following the feed holds: tasks by id, built only from feed entries."""

    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    token: str | None = None
    reminders: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, entry: dict[str, Any]) -> None:
        if entry["type"] == "upsert":
            self.tasks[entry["task"]["id"]] = entry["task"]
        elif entry["type"] == "delete":
            self.tasks.pop(entry["id"], None)
        else:
            assert entry["type"] == "reminder", entry
            self.reminders.append(entry)

    def follow(self, http: httpx.Client, path: str = "/api/tasks/changes", *, limit: int = 100) -> list[list[Any]]:
        """Read pages until `more` is false, applying each; returns every page's entries."""
        pages = []
        while True:
            params: dict[str, Any] = {"limit": limit}
            if self.token is not None:
                params["since"] = self.token
            response = http.get(path, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            ids = [entry["task"]["id"] if "task" in entry else entry["id"] for entry in page["changes"]]
            kinds = [entry["type"] for entry in page["changes"]]
            upserts_and_deletes = [i for i, kind in zip(ids, kinds, strict=True) if kind != "reminder"]
            assert len(upserts_and_deletes) == len(set(upserts_and_deletes)), f"a task twice in one page: {page}"
            for entry in page["changes"]:
                self.apply(entry)
            pages.append(page["changes"])
            self.token = page["next"]
            if not page["more"]:
                return pages


def server_tasks(http: httpx.Client, path: str = "/api/tasks") -> dict[int, dict[str, Any]]:
    """Every task the list route returns, following its pages."""
    tasks: dict[int, dict[str, Any]] = {}
    url: str | None = f"{path}?limit=500"
    while url is not None:
        response = http.get(url)
        assert response.status_code == 200, response.text
        tasks.update((task["id"], task) for task in response.json())
        link = response.links.get("next")
        url = link["url"] if link else None
    return tasks


@dataclass(frozen=True)
class Event:
    id: str | None
    type: str
    data: Any
    at: float  # time.monotonic() when it arrived


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a Server-Sent Events body, as its lines arrive (comments too, as type ":")."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield Event(None, ":", line[1:].strip(), time.monotonic())
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            data = json.loads(fields["data"]) if "data" in fields else None
            yield Event(fields.get("id"), fields.get("event", "message"), data, time.monotonic())
            fields = {}


class EventStream:
    """`GET path` as Server-Sent Events, read by a thread into a queue of Events (comments too,
    as type ":"), until the server ends it or `close()`."""

    def __init__(self, base_url: str, token: str, path: str = "/api/tasks/events", **headers: str) -> None:
        self.events: queue.Queue[Event | None] = queue.Queue()
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(30, read=None), verify=TLS)
        request = self._client.build_request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
        self.response = self._client.send(request, stream=True)
        self.ended = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.response.read()
            self.ended.set()

    def _read(self) -> None:
        try:
            for event in parse_events(self.response.iter_lines()):
                self.events.put(event)
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()
            self.events.put(None)

    def next(self, timeout: float = 10, *, comments: bool = False) -> Event | None:
        """The next event (None once the stream has ended); AssertionError if none comes in `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no event within {timeout} s") from None
            if event is None:
                self.events.put(None)  # stays ended
                return None
            if comments or event.type != ":":
                return event

    def close(self) -> None:
        self.response.close()
        self._client.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_randomly(base_url: str, token: str, seeds: list[int], seconds: float, seed: int, threads: int) -> list[int]:
    """`threads` writers creating, changing, completing and deleting one user's tasks through both
    route forms for `seconds` (a process's share of a race); the statuses they were answered."""
    statuses: list[int] = []
    lock = threading.Lock()

    def write(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        known = list(seeds)
        user = jwt.decode(token, options={"verify_signature": False})["sub"]
        headers = {"Authorization": f"Bearer {token}"}
        until = time.monotonic() + seconds
        with httpx.Client(base_url=base_url, headers=headers, timeout=30, verify=TLS) as http:
            while time.monotonic() < until:
                base = rng.choice(("/api/tasks", f"/api/{user}/tasks"))
                task = rng.choice(known) if known else None
                roll = rng.random()
                if roll < 0.3 or task is None:
                    key = {"Idempotency-Key": uuid.uuid4().hex} if rng.random() < 0.3 else {}
                    body = {"title": f"w{number}-{rng.randrange(10**6)}", "priority": rng.choice(PRIORITIES)}
                    response = http.post(base, json=body, headers=key)
                    if key and response.status_code == 201:
                        replay = http.post(base, json=body, headers=key)
                        assert replay.json() == response.json(), "a replay answered something else"
                    if response.status_code == 201:
                        known.append(response.json()["id"])
                elif roll < 0.55:
                    response = http.patch(f"{base}/{task}", json={"title": f"renamed {rng.randrange(10**6)}"})
                elif roll < 0.7:
                    response = http.patch(f"{base}/{task}/complete")
                elif roll < 0.8:
                    body = {"title": f"put {rng.randrange(10**6)}", "description": rng.choice((None, "d"))}
                    response = http.put(f"{base}/{task}", json=body)
                else:
                    response = http.delete(f"{base}/{task}")
                with lock:
                    statuses.append(response.status_code)

    workers = [threading.Thread(target=write, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses
