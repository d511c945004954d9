"""The change feed and its live stream (SPEC "Sync"): a client that applies the pages in order
holds exactly the server's tasks, every write path feeds it, tokens are the caller's only, and
streams deliver each change at once, resume exactly, end when their token does and on shutdown."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from handlers import cursors
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.sync import CHANGE_KEYS, EventStream, Replica, server_tasks, token_payload
from tests.support.tokens import mint
from tests.support.users import User


def test_a_snapshot_in_pages_then_the_changes_rebuild_the_tasks_exactly(alice: User) -> None:
    for number in range(7):
        alice.create(title=f"task {number}", tags=["a"] if number % 2 else [])
    replica = Replica()
    pages = replica.follow(alice.http, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert replica.tasks == server_tasks(alice.http)

    first, second, *_ = sorted(replica.tasks)
    assert alice.http.patch(f"/api/tasks/{first}", json={"title": "renamed"}).status_code == 200
    assert alice.http.patch(f"/api/tasks/{first}/complete").status_code == 200
    assert alice.http.delete(f"/api/tasks/{second}").status_code == 204
    added = alice.create(title="added")
    [page] = replica.follow(alice.http, limit=3)
    assert [(entry["type"], entry.get("id") or entry["task"]["id"]) for entry in page] == [
        ("upsert", first),  # renamed and completed: once, in its latest state
        ("delete", second),
        ("upsert", added["id"]),
    ]
    assert page[0]["task"]["title"] == "renamed" and page[0]["task"]["status"] == "complete"
    assert replica.tasks == server_tasks(alice.http)
    # Up to date: the same token again gives nothing new, and a new token.
    [again] = replica.follow(alice.http)
    assert again == []


def test_every_write_path_feeds_it_and_the_compatibility_form_is_the_same_feed(alice: User) -> None:
    replica = Replica()
    replica.follow(alice.http)
    compat = f"/api/{alice.id}/tasks"
    created = alice.http.post(compat, json={"title": "compat"}).json()
    keyed = alice.http.post("/api/tasks", json={"title": "keyed"}, headers={"Idempotency-Key": "k-1"}).json()
    assert alice.http.put(f"{compat}/{created['id']}", json={"title": "put"}).status_code == 200
    assert alice.http.patch(f"{compat}/{keyed['id']}/complete", json={"completed": True}).status_code == 200
    replica.follow(alice.http, f"{compat}/changes")
    assert {task["title"] for task in replica.tasks.values()} == {"put", "keyed"}
    assert replica.tasks == server_tasks(alice.http)
    assert alice.http.delete(f"{compat}/{created['id']}").status_code == 204
    replica.follow(alice.http, f"{compat}/changes")
    assert replica.tasks == server_tasks(alice.http)


def test_a_write_that_changes_nothing_and_an_idempotent_replay_add_no_change(alice: User, db: Engine) -> None:
    task = alice.http.post("/api/tasks", json={"title": "once"}, headers={"Idempotency-Key": "k-2"}).json()
    replica = Replica()
    replica.follow(alice.http)
    before = token_payload(replica.token or "")[1]
    replay = alice.http.post("/api/tasks", json={"title": "once"}, headers={"Idempotency-Key": "k-2"})
    assert replay.status_code == 201 and replay.json()["id"] == task["id"]
    assert alice.http.patch(f"/api/tasks/{task['id']}", json={"title": "once"}).status_code == 200
    assert alice.http.patch(f"/api/tasks/{task['id']}/complete", json={"completed": False}).status_code == 200
    [page] = replica.follow(alice.http)
    assert page == []
    assert token_payload(replica.token or "")[1] == before
    with db.connect() as connection:
        head = connection.scalar(text("SELECT seq FROM feed_heads WHERE user_id = :u"), {"u": alice.id})
    assert head == before


def test_a_token_is_the_callers_own_and_any_other_is_a_400(alice: User, bob: User) -> None:
    alice.create()
    token = alice.http.get("/api/tasks/changes").json()["next"]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (tampered, "not a token", "!!!", token + "x"):
        assert_problem(alice.http.get("/api/tasks/changes", params={"since": bad}), 400)
        assert_problem(alice.http.get("/api/tasks/events", params={"since": bad}), 400)
    problem = assert_problem(bob.http.get("/api/tasks/changes", params={"since": token}), 400)
    assert problem["detail"] == "the token is not valid for this user"
    assert_problem(bob.http.get("/api/tasks/events", headers={"Last-Event-ID": token}), 400)
    # Someone else's path is a 403, as on every compatibility route.
    assert_problem(bob.http.get(f"/api/{alice.id}/tasks/changes"), 403)
    assert_problem(bob.http.get(f"/api/{alice.id}/tasks/events"), 403)
    assert bob.http.get("/api/tasks/changes").json()["changes"] == []


def test_a_token_older_than_the_retention_or_than_a_purge_is_410(alice: User, db: Engine) -> None:
    first, second, third = (alice.create(title=f"t{n}") for n in range(3))
    replica = Replica()
    replica.follow(alice.http)
    epoch, seq, _issued = token_payload(replica.token or "")
    aged = cursors.encode(CHANGE_KEYS, [epoch, seq, int(time.time()) - 31 * 86400], user_id=alice.id, query={})
    problem = assert_problem(alice.http.get("/api/tasks/changes", params={"since": aged}), 410)
    assert "start again" in problem["detail"]
    assert_problem(alice.http.get("/api/tasks/events", headers={"Last-Event-ID": aged}), 410)

    assert alice.http.delete(f"/api/tasks/{first['id']}").status_code == 204
    with db.begin() as connection:  # the tombstone is now older than 30 days
        connection.execute(text("UPDATE feed_log SET at = at - interval '31 days' WHERE user_id = :u"), {"u": alice.id})
    assert alice.http.delete(f"/api/tasks/{second['id']}").status_code == 204  # purges the old one
    assert_problem(alice.http.get("/api/tasks/changes", params={"since": replica.token}), 410)
    # Starting again works, and so does every token issued after the purge.
    fresh = Replica()
    fresh.follow(alice.http)
    assert set(fresh.tasks) == {third["id"]}
    assert alice.http.delete(f"/api/tasks/{third['id']}").status_code == 204
    fresh.follow(alice.http)
    assert fresh.tasks == {}


def test_a_snapshot_skips_deletions_before_it_but_not_during_it(alice: User) -> None:
    tasks = [alice.create(title=f"t{n}") for n in range(6)]
    assert alice.http.delete(f"/api/tasks/{tasks[0]['id']}").status_code == 204  # before the snapshot
    replica = Replica()
    response = alice.http.get("/api/tasks/changes", params={"limit": 2})
    page = response.json()
    assert [entry["type"] for entry in page["changes"]] == ["upsert", "upsert"] and page["more"]
    for entry in page["changes"]:
        replica.apply(entry)
    replica.token = page["next"]
    delivered = next(iter(replica.tasks))
    assert alice.http.delete(f"/api/tasks/{delivered}").status_code == 204  # during it
    pages = replica.follow(alice.http, limit=2)
    entries = [entry for page in pages for entry in page]
    assert {"type": "delete", "id": tasks[0]["id"]} not in entries
    assert {"type": "delete", "id": delivered} in entries
    assert replica.tasks == server_tasks(alice.http)


def test_a_change_through_another_process_reaches_every_open_stream_at_once(
    alice: User, service: Service, start_service: Callable[..., Service]
) -> None:
    other = start_service()
    with EventStream(other.base_url, alice.token) as first, EventStream(service.base_url, alice.token) as second:
        assert first.next(comments=True).type == ":" and second.next(comments=True).type == ":"
        written = time.monotonic()
        task = alice.create(title="seen everywhere")
        for stream in (first, second):
            event = stream.next()
            assert event is not None and event.type == "upsert" and event.id
            assert event.data == {"type": "upsert", "task": task}
            print(f"delivered {event.at - written:.3f} s after the write was sent")


def test_a_stream_resumes_exactly_after_a_dropped_connection(alice: User, service: Service) -> None:
    kept = alice.create(title="kept")
    with EventStream(service.base_url, alice.token) as stream:
        alice.http.patch(f"/api/tasks/{kept['id']}", json={"title": "seen"})
        seen = stream.next()
        assert seen is not None and seen.data["task"]["title"] == "seen"
    # Missed while disconnected:
    gone = alice.create(title="created and deleted")
    assert alice.http.delete(f"/api/tasks/{gone['id']}").status_code == 204
    added = alice.create(title="added")
    alice.http.patch(f"/api/tasks/{kept['id']}/complete")
    expected = [("delete", gone["id"]), ("upsert", added["id"]), ("upsert", kept["id"])]
    for resume in ({"Last-Event-ID": seen.id}, {}):
        path = "/api/tasks/events" if resume else f"/api/tasks/events?since={seen.id}"
        with EventStream(service.base_url, alice.token, path, **resume) as stream:
            missed = [stream.next() for _ in expected]
            assert [(event.type, event.data.get("id") or event.data["task"]["id"]) for event in missed] == expected
            alice.create(title="live again")
            live = stream.next()
            assert live is not None and live.data["task"]["title"] == "live again"
            assert alice.http.delete(f"/api/tasks/{live.data['task']['id']}").status_code == 204
            assert stream.next().data == {"type": "delete", "id": live.data["task"]["id"]}
            expected.append(("delete", live.data["task"]["id"]))  # its upsert is gone with it


def test_a_stream_ends_with_expired_when_its_token_expires(make_user: Callable[[], User], service: Service) -> None:
    user = make_user()
    short = mint(user.id, ttl=2)
    with EventStream(service.base_url, short) as stream:
        event = stream.next(timeout=30)
        assert event is not None and event.type == "expired" and event.id is None
        assert "expired" in event.data["detail"]
        assert stream.next(timeout=10) is None  # and the stream is over


@pytest.fixture(scope="module")
def capped(start_module_service: Callable[..., Service]) -> Service:
    return start_module_service(MAX_STREAMS_PER_USER="2", STREAM_HEARTBEAT_SECONDS="1", STREAM_MAX_SECONDS="20")


def test_streams_beyond_the_cap_are_429_until_one_closes(capped: Service, make_user: Callable[[], User]) -> None:
    user, other = make_user(), make_user()
    first, second = EventStream(capped.base_url, user.token), EventStream(capped.base_url, user.token)
    with EventStream(capped.base_url, user.token) as third:
        assert third.response.status_code == 429
        assert third.response.headers["retry-after"]
        assert third.response.headers["content-type"].startswith("application/problem+json")
    with EventStream(capped.base_url, other.token) as others:
        assert others.response.status_code == 200  # the cap is per user
    first.close()
    deadline = time.monotonic() + 10
    while True:
        with EventStream(capped.base_url, user.token) as again:
            if again.response.status_code == 200:
                break
        assert time.monotonic() < deadline, "a closed stream still counts"
    second.close()


def test_a_comment_line_keeps_a_quiet_stream_open(capped: Service, make_user: Callable[[], User]) -> None:
    user = make_user()
    with EventStream(capped.base_url, user.token) as stream:
        comments = [stream.next(comments=True) for _ in range(3)]
        assert [event.type for event in comments if event] == [":", ":", ":"]


def test_sigterm_ends_open_streams_and_the_process_promptly(
    start_service: Callable[..., Service], make_user: Callable[[], User]
) -> None:
    service = start_service("--workers", "2")
    user = make_user()
    streams = [EventStream(service.base_url, user.token) for _ in range(4)]
    for stream in streams:
        assert stream.next(comments=True).type == ":"
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    for stream in streams:
        assert stream.ended.wait(30), "a stream outlived the shutdown"
    assert service.process.wait(30) == 0
    print(f"streams ended and the service exited {time.monotonic() - started:.2f} s after SIGTERM")


def test_head_on_the_stream_answers_its_headers_and_holds_nothing_open(alice: User) -> None:
    for _ in range(12):  # more than MAX_STREAMS_PER_USER: none of them is left counting
        response = alice.http.head("/api/tasks/events")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    assert alice.http.get("/api/tasks").status_code == 200  # the same connection serves on


def test_a_token_past_its_expiry_opens_no_stream_even_within_the_leeway(alice: User, service: Service) -> None:
    """Else a client would be sent `expired` at once, reconnect with the same token, and spin."""
    late = mint(alice.id, ttl=-5)  # within JWT_LEEWAY_SECONDS (30): the API still takes it
    assert alice.http.get("/api/tasks", headers={"Authorization": f"Bearer {late}"}).status_code == 200
    with EventStream(service.base_url, late) as stream:
        assert_problem(stream.response, 401)
