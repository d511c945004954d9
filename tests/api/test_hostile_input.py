"""Hostile input: huge, deep and long requests are refused cleanly without hurting the process,
exotic Unicode is stored and served exactly as sent, and every attack from the security review
(issue 13) is a 4xx problem+json — never a 500 — that stores nothing."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import Engine, text

from tests.support import ROOT
from tests.support.jwks import b64url, hand_signed
from tests.support.metrics import scrape, total
from tests.support.problems import assert_problem
from tests.support.service import Service, raw_get
from tests.support.tokens import SECRET, claims
from tests.support.users import User, still_serving, task_count

MiB = 1 << 20
HUGE = 10 * MiB
PIECE = 64 * 1024
DEPTH = 10_000
HUNDRED_KB = 100 * 1024


# -- a huge body ----------------------------------------------------------------------------------


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: the peak RSS restarts from the current RSS


def upload(port: int, head: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Send `head`, then `body` until the server answers; the answer's status line and how many
    body bytes went out before it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sent = send_until_answered(sock, body)
        answer = b""
        while b"\r\n" not in answer and (received := sock.recv(4096)):
            answer += received
        return answer.split(b"\r\n", 1)[0], sent


def send_until_answered(sock: socket.socket, body: Iterator[bytes]) -> int:
    sent = 0
    for piece in body:
        view = memoryview(piece)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable or not writable:
                return sent
            try:
                written = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                return sent
            view, sent = view[written:], sent + written
    return sent


def plain(size: int) -> Iterator[bytes]:
    for offset in range(0, size, PIECE):
        yield b"x" * min(PIECE, size - offset)


def chunked(size: int) -> Iterator[bytes]:
    for piece in plain(size):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_10_mb_body_is_a_413_without_being_read_into_memory(service: Service, alice: User, framing: str) -> None:
    length = f"Content-Length: {HUGE}" if framing == "content-length" else "Transfer-Encoding: chunked"
    head = (
        f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\nAuthorization: Bearer {alice.token}\r\n"
        f"Content-Type: application/json\r\n{length}\r\n\r\n"
    ).encode()
    pid = service.process.pid
    before = psutil.Process(pid).memory_info().rss
    reset_peak_rss(pid)
    status, sent = upload(service.port, head, plain(HUGE) if framing == "content-length" else chunked(HUGE))
    growth = peak_rss(pid) - before
    print(
        f"\n10 MB body ({framing}): {status.decode()!r} after {sent / MiB:.2f} MiB sent; "
        f"peak RSS +{growth / MiB:.2f} MiB"
    )
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < HUGE, "the answer came only after the whole body was sent"
    assert growth < 4 * MiB
    assert alice.http.get("/api/tasks").json() == []
    still_serving(alice)


# -- deep, long and large -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * DEPTH + "]" * DEPTH,
        '{"a":' * DEPTH + "1" + "}" * DEPTH,
        '{"title": "deep", "description": ' + "[" * DEPTH + "]" * DEPTH + "}",
        '{"title": "deep", "tags": [' + "{" * DEPTH,
    ],
    ids=["arrays", "objects", "inside-a-field", "unterminated"],
)
def test_json_nested_10000_levels_deep_is_a_4xx_not_a_500(alice: User, body: str) -> None:
    task = f"/api/tasks/{alice.create()['id']}"
    for method, path in (("POST", "/api/tasks"), ("PUT", task), ("PATCH", task), ("PATCH", f"{task}/complete")):
        response = alice.http.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in {400, 422}, (method, path, response.status_code, response.text[:300])
        assert_problem(response, response.status_code)
    still_serving(alice)


@pytest.mark.parametrize(
    "query",
    [
        "q=" + "a" * HUNDRED_KB,
        "search=" + "a" * HUNDRED_KB,
        "cursor=" + "c" * HUNDRED_KB,
        "tag=x&" * (HUNDRED_KB // 6),
        "unknown=" + "u" * HUNDRED_KB,
    ],
    ids=["q", "search", "cursor", "many-tags", "unknown"],
)
def test_a_100_kb_query_string_is_refused_cleanly(service: Service, alice: User, query: str) -> None:
    response = raw_get(service, f"/api/tasks?{query}", {"Authorization": f"Bearer {alice.token}"})
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    still_serving(alice)


def test_a_100_kb_token_is_a_401(alice: User) -> None:
    response = alice.http.get("/api/tasks", headers={"Authorization": "Bearer " + "a" * HUNDRED_KB})
    assert_problem(response, 401)
    still_serving(alice)


def test_a_100_kb_header_is_refused_cleanly(alice: User) -> None:
    response = alice.http.get("/api/tasks", headers={"X-Padding": "p" * HUNDRED_KB})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    still_serving(alice)


# -- Unicode --------------------------------------------------------------------------------------

EMOJI = "🧪 Ship it 🚀🎉"
RIGHT_TO_LEFT = "שלום עולם · مرحبا بالعالم · \u202bembedded\u202c"
COMBINING = "e\u0301 vs \u00e9 · Z\u0334\u0321\u032a\u034e\u0344\u0350algo · \u0915\u094d\u0937"
ZWJ = "👩\u200d👩\u200d👧\u200d👦 👨🏽\u200d💻 🏳️\u200d🌈 🇺🇦"
TAGS = ["🏷️", "עברית", "e\u0301", "\u00e9", "👩\u200d💻", "العربية", "a\u0308\u0301", "日本語"]


def stored_bytes(db: Engine, task_id: int) -> tuple[bytes, bytes, list[bytes]]:
    query = text(
        "SELECT convert_to(title, 'UTF8') AS title, convert_to(description, 'UTF8') AS description,"
        " ARRAY(SELECT convert_to(tag, 'UTF8') FROM unnest(tags) WITH ORDINALITY AS t(tag, n) ORDER BY n) AS tags"
        " FROM tasks WHERE id = :id"
    )
    with db.connect() as connection:
        row = connection.execute(query, {"id": task_id}).one()
        return bytes(row.title), bytes(row.description), [bytes(tag) for tag in row.tags]


@pytest.mark.parametrize(
    ("title", "description"),
    [(EMOJI, ZWJ), (RIGHT_TO_LEFT, COMBINING), (ZWJ, EMOJI + RIGHT_TO_LEFT + COMBINING + ZWJ)],
    ids=["emoji", "right-to-left", "zwj"],
)
def test_unicode_round_trips_byte_for_byte_in_title_description_and_tags(
    alice: User, db: Engine, title: str, description: str
) -> None:
    created = alice.create(title=title, description=description, tags=TAGS)
    path = f"/api/tasks/{created['id']}"
    served = [created, alice.http.get(path).json(), *alice.http.get("/api/tasks").json()]
    for task in served:
        assert (task["title"], task["description"], task["tags"]) == (title, description, TAGS)
    assert stored_bytes(db, created["id"]) == (title.encode(), description.encode(), [tag.encode() for tag in TAGS])

    patched = alice.http.patch(path, json={"title": description[:255], "description": title, "tags": TAGS[::-1]})
    assert patched.status_code == 200, patched.text
    fetched = alice.http.get(path).json()
    assert (fetched["title"], fetched["description"], fetched["tags"]) == (description[:255], title, TAGS[::-1])
    found = alice.http.get("/api/tasks", params={"q": title[:6]}).json()
    assert [task["id"] for task in found] == [created["id"]]


# -- the security review's list (issue 13): 4xx problem+json, never a 500, nothing stored --------------


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(f"{b64url({'alg': ['HS256']})}.{b64url(b'{}')}.AAAA", id="alg-list"),
        pytest.param(f"{b64url({'alg': {}})}.{b64url(b'{}')}.AAAA", id="alg-object"),
        pytest.param(f"{b64url({'alg': None})}.{b64url(b'{}')}.AAAA", id="alg-null"),
        pytest.param(f"{b64url({'alg': 256})}.{b64url(b'{}')}.AAAA", id="alg-number"),
    ],
)
def test_an_alg_that_is_not_a_string_is_401(alice: User, token: str) -> None:
    assert_problem(alice.http.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}), 401)


@pytest.mark.parametrize(
    "times",
    [
        pytest.param({"exp": str(int(time.time()) + 600)}, id="exp-digits"),
        pytest.param({"exp": True}, id="exp-true"),
        pytest.param({"nbf": str(int(time.time()) - 60)}, id="nbf-digits"),
        pytest.param({"iat": str(int(time.time()) - 60)}, id="iat-digits"),
    ],
)
def test_a_numeric_date_that_is_not_a_json_number_is_401(alice: User, db: Engine, times: dict[str, Any]) -> None:
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(alice.id, **times), SECRET)
    for method in ("GET", "POST"):
        response = alice.http.request(
            method, "/api/tasks", headers={"Authorization": f"Bearer {token}"}, json={"title": "never stored"}
        )
        assert_problem(response, 401)
    assert task_count(db, alice) == 0


SURROGATE_KEY = '{"title": "x", "\\ud800": 1}'
CONTROL_KEY = '{"title": "x", "\\u0000\\u001b[31mred\\u202e": 1}'


@pytest.mark.parametrize("raw", [SURROGATE_KEY, CONTROL_KEY], ids=["lone-surrogate", "controls"])
def test_an_unknown_key_that_is_not_printable_is_422_and_escaped(alice: User, db: Engine, raw: str) -> None:
    task = alice.create()
    routes = [
        ("POST", "/api/tasks"),
        ("POST", f"/api/{alice.id}/tasks"),
        ("PUT", f"/api/tasks/{task['id']}"),
        ("PATCH", f"/api/tasks/{task['id']}"),
        ("PATCH", f"/api/{alice.id}/tasks/{task['id']}"),
    ]
    for method, path in routes:
        response = alice.http.request(method, path, content=raw, headers={"Content-Type": "application/json"})
        problem = assert_problem(response, 422)
        (field,) = [error["field"] for error in problem["errors"]]
        assert field.isprintable() and "\\u" in field, field
        assert field in problem["detail"]
    assert task_count(db, alice) == 1
    assert alice.http.get(f"/api/tasks/{task['id']}").json() == task


def test_an_unknown_key_of_10000_characters_is_echoed_shortened(alice: User, db: Engine) -> None:
    name = "k" * 10_000
    problem = assert_problem(alice.http.post("/api/tasks", json={"title": "x", name: 1}), 422)
    (field,) = [error["field"] for error in problem["errors"]]
    assert field.startswith("kkk") and len(field) < 100
    assert len(json.dumps(problem)) < 1000
    assert task_count(db, alice) == 0


@pytest.mark.parametrize("query", ["%00=1", "%FF=1", "x%0D%0Ay=1", "%ED%A0%80=1", "%E2%80%AE=1", "k" * 5000 + "=1"])
def test_an_unknown_query_parameter_with_a_hostile_name_is_422_and_escaped(
    service: Service, alice: User, query: str
) -> None:
    response = raw_get(service, f"/api/tasks?{query}", {"Authorization": f"Bearer {alice.token}"})
    problem = assert_problem(response, 422)
    (field,) = [error["field"] for error in problem["errors"]]
    assert field.isprintable() and len(field) <= 65, field


def test_two_authorization_headers_are_a_400(alice: User, bob: User, db: Engine) -> None:
    for first, second in ((alice, bob), (alice, alice)):
        response = alice.http.post(
            "/api/tasks",
            json={"title": "whose?"},
            headers=[("Authorization", f"Bearer {first.token}"), ("Authorization", f"Bearer {second.token}")],
        )
        assert_problem(response, 400)
    assert task_count(db, alice) == task_count(db, bob) == 0


def test_the_next_link_never_echoes_the_host_header(service: Service, alice: User) -> None:
    for title in ("one", "two"):
        alice.create(title=title)
    response = raw_get(
        service, "/api/tasks?limit=1", {"Authorization": f"Bearer {alice.token}", "Host": "evil.example"}
    )
    assert response.status_code == 200, response.text
    link = response.headers["link"]
    assert "evil.example" not in link
    assert link.startswith("</api/tasks?") and link.endswith('>; rel="next"'), link


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/tasks", 200),
        ("POST", "/api/tasks", 201),
        ("GET", "/api/tasks/0", 404),
        ("GET", "/api/tasks?limit=0", 422),
    ],
)
def test_authenticated_answers_are_never_cached_or_sniffed(alice: User, method: str, path: str, status: int) -> None:
    response = alice.http.request(method, path, json={"title": "x"} if method == "POST" else None)
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/health", "/api/tasks", "/api/openapi.json", "/no/such/route"])
def test_every_answer_forbids_content_sniffing(client: httpx.Client, path: str) -> None:
    assert client.get(path).headers["x-content-type-options"] == "nosniff"


def disconnect_mid_body(service: Service, user: User) -> None:
    """Promise a 1000-byte body, send a JSON object that would be valid on its own, and hang up."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(
            f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"title": "cut short"}'
        )


def test_a_client_hanging_up_mid_body_is_no_server_error(start_service: Callable[..., Service], db: Engine) -> None:
    service = start_service(LOG_LEVEL="INFO")
    user = User(service.base_url)
    disconnect_mid_body(service, user)
    deadline = time.monotonic() + 10
    while total(scrape(service), "todo_api_requests_total", operation="handlers.tasks.create", status="499") < 1:
        assert time.monotonic() < deadline, service.output()[-2000:]
        time.sleep(0.05)
    samples = scrape(service)
    assert total(samples, "todo_api_requests_total", status="500") == 0
    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    assert any("disconnect" in line["message"] for line in lines if line["level"] == "info")
    assert task_count(db, user) == 0
    user.http.close()


# -- what one user may hold -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(start_module_service: Callable[..., Service]) -> Service:
    return start_module_service(MAX_TASKS_PER_USER="5")


def test_the_task_cap_is_a_409_that_stores_nothing_until_a_task_is_deleted(capped: Service, db: Engine) -> None:
    user = User(capped.base_url)
    first = [user.create(title=f"task {n}") for n in range(5)]
    for path, headers in (
        ("/api/tasks", {}),
        (f"/api/{user.id}/tasks", {}),
        ("/api/tasks", {"Idempotency-Key": "one-too-many"}),
    ):
        problem = assert_problem(user.http.post(path, json={"title": "sixth"}, headers=headers), 409)
        assert "5" in problem["detail"]
    assert task_count(db, user) == 5
    assert user.http.delete(f"/api/tasks/{first[0]['id']}").status_code == 204
    replayable = user.http.post("/api/tasks", json={"title": "sixth"}, headers={"Idempotency-Key": "one-too-many"})
    assert replayable.status_code == 201, replayable.text
    assert_problem(user.http.post("/api/tasks", json={"title": "seventh"}), 409)
    user.http.close()


def test_concurrent_creates_never_pass_the_task_cap(capped: Service, db: Engine) -> None:
    user = User(capped.base_url)

    def create(n: int) -> int:
        with httpx.Client(base_url=capped.base_url, headers={"Authorization": f"Bearer {user.token}"}) as http:
            return http.post("/api/tasks", json={"title": f"race {n}"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(create, range(20)))
    assert statuses == [201] * 5 + [409] * 15
    assert task_count(db, user) == 5
    user.http.close()


def test_expired_idempotency_keys_are_deleted_when_the_user_sends_a_new_one(alice: User, db: Engine) -> None:
    for key in ("old-1", "old-2", "fresh"):
        response = alice.http.post("/api/tasks", json={"title": key}, headers={"Idempotency-Key": key})
        assert response.status_code == 201, response.text
    with db.begin() as connection:
        connection.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                " WHERE user_id = :id AND key LIKE 'old-%'"
            ),
            {"id": alice.id},
        )
    response = alice.http.post("/api/tasks", json={"title": "next"}, headers={"Idempotency-Key": "next"})
    assert response.status_code == 201, response.text
    with db.connect() as connection:
        keys = connection.scalars(
            text("SELECT key FROM idempotency_keys WHERE user_id = :id ORDER BY key"), {"id": alice.id}
        ).all()
    assert keys == ["fresh", "next"]


# -- the third review (issue 23) ------------------------------------------------------------------------

LONG_NUMBER = "9" * 4301  # Python's int() refuses more than 4 300 digits


@pytest.fixture(scope="module")
def logged(start_module_service: Callable[..., Service]) -> Service:
    return start_module_service(LOG_LEVEL="INFO")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("authorized", [True, False], ids=["with-token", "without-token"])
def test_a_task_id_of_4301_digits_is_a_404_on_every_route_form(
    logged: Service, alice: User, method: str, authorized: bool
) -> None:
    service = logged
    headers = {"Authorization": f"Bearer {alice.token}"} if authorized else {}
    for path in (
        f"/api/tasks/{LONG_NUMBER}",
        f"/api/{alice.id}/tasks/{LONG_NUMBER}",
        f"/api/tasks/{LONG_NUMBER}/complete",
    ):
        response = httpx.request(method, service.base_url + path, headers=headers, json={"title": "x"}, timeout=10)
        problem = assert_problem(response, 404)
        assert LONG_NUMBER not in problem["detail"]
    lines = [line for line in service.output().splitlines() if LONG_NUMBER[:300] in line]
    assert not lines, "a log line carries the whole path"


def mcp_post(service: Service, user: User, body: bytes | str, **headers: str) -> httpx.Response:
    sent = {
        "Authorization": f"Bearer {user.token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        **headers,
    }
    return httpx.post(f"{service.base_url}/mcp", content=body, headers=sent, timeout=10)


TOOLS_LIST = '{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}'


def test_mcp_carries_the_apis_limits_and_headers(service: Service, alice: User, bob: User) -> None:
    answered = mcp_post(service, alice, TOOLS_LIST)
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-content-type-options"] == "nosniff"
    assert answered.headers["cache-control"] == "no-store"
    assert answered.headers["ratelimit"].startswith('"default";r=')
    two = httpx.post(
        f"{service.base_url}/mcp",
        content=TOOLS_LIST,
        headers=[
            ("Authorization", f"Bearer {alice.token}"),
            ("Authorization", f"Bearer {bob.token}"),
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
        ],
        timeout=10,
    )
    assert_problem(two, 400)
    assert_problem(mcp_post(service, alice, TOOLS_LIST, **{"X-Padding": "p" * 20_000}), 431)
    assert two.headers["x-content-type-options"] == "nosniff"


def rpc_error(response: httpx.Response, status: int, code: int, request_id: Any) -> str:
    assert response.status_code == status, response.text
    reply = response.json()
    assert reply["id"] == request_id and reply["error"]["code"] == code, reply
    message: str = reply["error"]["message"]
    assert "pydantic" not in message and "codec" not in message and "Traceback" not in message, message
    return message


def call(tool: str, **arguments: Any) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    )


def test_mcp_refuses_what_the_api_refuses_with_a_json_rpc_error_of_the_right_code(
    service: Service, alice: User
) -> None:
    deep = '{"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": ' + "[" * DEPTH + "]" * DEPTH + "}"
    assert "nested" in rpc_error(mcp_post(service, alice, deep), 400, -32600, 3)
    utf16 = TOOLS_LIST.encode("utf-16")
    rpc_error(
        mcp_post(service, alice, utf16, **{"Content-Type": "application/json; charset=utf-16"}), 400, -32700, None
    )
    rpc_error(mcp_post(service, alice, b"\xff\xfe{}"), 400, -32700, None)
    unknown = '{"jsonrpc": "2.0", "id": 4, "method": "tasks/destroy_all"}'
    assert rpc_error(mcp_post(service, alice, unknown), 200, -32601, 4).startswith("Method not found")
    wrong = '{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": 5}}'
    assert "name" in rpc_error(mcp_post(service, alice, wrong), 200, -32602, 5)
    surrogate = call("add_task", user_id=alice.id, title="\ud800")
    rpc_error(mcp_post(service, alice, surrogate), 200, -32602, 9)
    huge = call("complete_task", user_id=alice.id, task_id=0).replace('"task_id": 0', f'"task_id": {LONG_NUMBER}')
    rpc_error(mcp_post(service, alice, huge), 200, -32602, 9)
    still_serving(alice)


@pytest.mark.parametrize("user_id", [".", "..", ""])
def test_an_mcp_path_argument_that_is_a_dot_segment_is_refused_before_any_request(
    service: Service, alice: User, user_id: str
) -> None:
    alice.create(title="mine")
    for tool, arguments in (("list_tasks", {}), ("delete_task", {"task_id": 1}), ("add_task", {"title": "x"})):
        reply = mcp_post(service, alice, call(tool, user_id=user_id, **arguments)).json()
        assert reply["result"]["isError"], reply
        assert reply["result"]["content"][0]["text"] == "user_id is not a valid user id"
    reply = mcp_post(service, alice, call("complete_task", user_id=alice.id, task_id=-1)).json()
    assert reply["result"]["content"][0]["text"] == "task_id is not a valid task id"
    assert [task["title"] for task in alice.http.get("/api/tasks").json()] == ["mine"]


def test_todo_api_mcp_over_stdio_replies_once_to_every_request_id(service: Service, alice: User) -> None:
    lines = [
        "this is not JSON",
        call("complete_task", user_id=alice.id, task_id=0).replace('"task_id": 0', f'"task_id": {LONG_NUMBER}'),
        call("add_task", user_id=alice.id, title="\ud800").replace('"id": 9', '"id": 10'),
        '{"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": ' + "[" * DEPTH + "]" * DEPTH + "}",
        '{"jsonrpc": "2.0", "id": 12, "method": "no/such/method"}',
    ]
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("TODO_API_", "DATABASE_URL"))},
        "TODO_API_URL": service.base_url,
        "TODO_API_TOKEN": alice.token,
    }
    result = subprocess.run(
        [sys.executable, "-m", "todo_api.cli", "mcp"],
        input="\n".join(lines) + "\n",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(reply["id"], reply["error"]["code"]) for reply in replies] == [
        (None, -32700),
        (9, -32602),
        (10, -32602),
        (11, -32600),
        (12, -32601),
    ], result.stdout


def test_a_trailing_slash_redirect_never_echoes_the_host(service: Service, alice: User) -> None:
    for headers in ({"Host": "evil.example"}, {"Host": "evil.example", "Authorization": f"Bearer {alice.token}"}):
        response = raw_get(service, "/api/tasks/", headers)
        assert response.status_code == 307, response.text
        assert response.headers["location"] == "/api/tasks"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert ("cache-control" in response.headers) == ("Authorization" in headers)
