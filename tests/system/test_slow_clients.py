"""Slow clients: a connection that stops sending its request, or trickles its body, is closed
within the server's read limits (each waits them out); connections beyond MAX_CONNECTIONS are refused."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import Engine

from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.users import User, still_serving, task_count


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (reading what it may answer first) within `within` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True
    return False


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", id="half-the-headers"),
        pytest.param(
            b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer TOKEN\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            id="part-of-the-body",
        ),
    ],
)
def test_a_connection_that_stops_sending_its_request_is_closed(service: Service, alice: User, sent: bytes) -> None:
    """Slowloris: without read deadlines, each such connection would be held open for ever."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(sent.replace(b"TOKEN", alice.token.encode()))
        assert closed_by_server(sock, within=30)
    still_serving(alice)


def test_a_body_trickled_slower_than_the_whole_request_deadline_is_cut_off(
    start_service: Callable[..., Service], db: Engine
) -> None:
    """Each pause is under the 10 s idle limit; the whole request must arrive within REQUEST_TIMEOUT_SECONDS."""
    service = start_service(REQUEST_TIMEOUT_SECONDS="3")
    user = User(service.base_url)
    body = b'{"title": "trickled", "description": "' + b"x" * 64 + b'"}'
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(
            f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        closed = False
        for byte in body:
            if closed_by_server(sock, within=1):
                closed = True
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed, "the whole body was accepted"
        assert time.monotonic() - started < len(body)  # cut off, long before the body was complete
    assert task_count(db, user) == 0
    still_serving(user)
    user.http.close()


def test_connections_beyond_max_connections_get_a_503_problem_with_retry_after(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(MAX_CONNECTIONS="16")
    held = [socket.create_connection(("127.0.0.1", service.port), timeout=10) for _ in range(16)]
    try:
        response = httpx.get(service.base_url + "/health", timeout=10)
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
    finally:
        for sock in held:
            sock.close()
    poll_until(lambda: httpx.get(service.base_url + "/health", timeout=10).status_code == 200)


def poll_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)
