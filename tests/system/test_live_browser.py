"""Live sync in a real browser (SPEC "Sync", issue 20): a page in Debian's headless Chromium follows a
user's tasks through the packed TypeScript client's subscribe() (the npm tarball installed into a
fresh project, loaded by an import map), on its own origin (CORS), streaming from one process while
another process takes the writes — plain HTTP and MCP tool calls through /mcp with the official SDK.
The page sees each change as it commits (the delays are printed), and after its network drops (the
browser offline, its open connections cut) and comes back, it catches up with exactly what it
missed: its replica equals the server's tasks, no change delivered twice, no snapshot taken again."""

from __future__ import annotations

import functools
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anyio
import pytest
from mcp import ClientSession

from tests.support import ROOT, prerequisites
from tests.support.mcp import answer, connected
from tests.support.npm import CLIENT, install, npm
from tests.support.service import Service
from tests.support.sync import server_tasks
from tests.support.users import User

BROWSER = ROOT / "tests" / "support" / "browser"


class Page:
    """tests/support/browser/live.mjs: the page following a user's tasks, and the commands it takes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [prerequisites.node(), "live.mjs"],
            cwd=BROWSER,
            env={**os.environ, "CHROMIUM": prerequisites.program("chromium", "chromium"), **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: list[str] = []  # the driver's stderr: the page's console, its uncaught errors
        threading.Thread(target=self._read, daemon=True).start()
        self._stderr = threading.Thread(target=self._collect_errors, daemon=True)
        self._stderr.start()
        assert self._answer(90) == {"ready": True}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _collect_errors(self) -> None:
        assert self.process.stderr is not None
        self.errors.extend(self.process.stderr)

    def _answer(self, timeout: float = 30) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the page's driver said nothing in {timeout} s: {''.join(self.errors)}") from None
        assert line is not None, f"the page's driver ended: {''.join(self.errors)}"
        return json.loads(line)

    def do(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"do": command}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def until(self, what: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        """The page's state once `condition` holds of it; AssertionError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.do("state")
            if condition(state):
                return state
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}; the page has {state}"
            time.sleep(0.02)

    def close(self) -> list[str]:
        """Closes the browser; the page's uncaught errors."""
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._stderr.join(10)
        return [line for line in self.errors if line.startswith("page error")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page, with the packed client npm-installed beside it, served on an origin of its own."""
    prerequisites.program("chromium", "chromium")
    install(CLIENT)
    install(BROWSER)
    folder = tmp_path_factory.mktemp("live-page")
    packed = npm(CLIENT, "pack", "--json", "--pack-destination", str(folder))
    assert packed.returncode == 0, packed.stdout + packed.stderr
    tarball = folder / json.loads(packed.stdout)[0]["filename"]
    (folder / "package.json").write_text(json.dumps({"name": "live-page", "private": True, "type": "module"}))
    installed = npm(folder, "install", "--no-audit", "--no-fund", "--prefer-offline", str(tarball))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shutil.copy(BROWSER / "live.html", folder / "index.html")

    handler = functools.partial(Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Quiet(SimpleHTTPRequestHandler):
    """Static files, module scripts with a JavaScript type (browsers refuse others), no log lines."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def streaming(site: str, start_module_service: Callable[..., Service]) -> Service:
    """The process the page streams from; it takes no write (the session's service does)."""
    return start_module_service(CORS_ORIGINS=site, STREAM_HEARTBEAT_SECONDS="1")


def cut_connections(port: int) -> int:
    """Kills every TCP connection to `port` (`ss -K`), as a network failure would: how many it cut."""
    if os.geteuid() != 0:
        pytest.skip("cutting a connection (ss -K) needs root")
    ss = prerequisites.program("ss", "iproute2")
    killed = subprocess.run(
        [ss, "-K", "-H", "-t", "-n", "state", "established", "sport", "=", f":{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert killed.returncode == 0, killed.stderr
    if not killed.stdout.strip():
        pytest.skip("this kernel cannot destroy sockets (ss -K needs CONFIG_INET_DIAG_DESTROY)")
    return len(killed.stdout.splitlines())


def mcp(service: Service, user: User, tool: str, **arguments: Any) -> tuple[dict[str, Any], float, float]:
    """One MCP tool call through /mcp: its answer, and time.time() when it was sent and answered."""

    async def call() -> tuple[dict[str, Any], float, float]:
        async with connected(service.base_url, user.token) as session:
            return await _call(session, tool, {"user_id": user.id, **arguments})

    return anyio.run(call)


async def _call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    sent = time.time()
    result = answer(await session.call_tool(tool, arguments))
    return result, sent, time.time()


def test_a_page_sees_every_change_at_once_and_catches_up_exactly_after_a_network_drop(
    site: str, streaming: Service, service: Service
) -> None:
    alice = User(service.base_url)
    kept, doomed = alice.create(title="kept"), alice.create(title="doomed")
    page = Page({"PAGE": f"{site}/index.html", "BASE_URL": streaming.base_url, "TOKEN": alice.token})
    try:
        state = page.until("the snapshot, then the stream", lambda state: state["opened"] == 1)
        assert {int(id) for id in state["tasks"]} == {kept["id"], doomed["id"]}

        def http(method: str, path: str, **kwargs: Any) -> tuple[dict[str, Any], float, float]:
            sent = time.time()
            response = alice.http.request(method, path, **kwargs)
            assert response.is_success, response.text
            return (response.json() if response.content else {}), sent, time.time()

        # Live: each change, through the other process, reaches the page.
        writes = [
            ("HTTP POST", lambda: http("POST", "/api/tasks", json={"title": "from another client"})),
            ("HTTP PATCH", lambda: http("PATCH", f"/api/tasks/{kept['id']}", json={"title": "kept, renamed"})),
            ("MCP add_task", lambda: mcp(service, alice, "add_task", title="from the assistant")),
            ("MCP complete_task", lambda: mcp(service, alice, "complete_task", task_id=kept["id"])),
            ("HTTP DELETE", lambda: http("DELETE", f"/api/tasks/{doomed['id']}")),
        ]
        delays = []
        for name, write in writes:
            seen = len(page.do("state")["events"])
            _, sent, answered = write()
            state = page.until(f"{name} reaches the page", lambda state, seen=seen: len(state["events"]) > seen)
            [event] = state["events"][seen:]
            at = event["at"] / 1000
            delays.append(at - sent)
            print(
                f"{name:18s} on the page {at - sent:6.3f} s after it was sent, {at - answered:+.3f} s after its answer"
            )
        print(f"slowest: {max(delays):.3f} s after the write was sent")
        assert page.do("state")["tasks"] == _by_id(server_tasks(alice.http))

        # The network drops; changes are made meanwhile; it comes back.
        before = page.do("state")
        assert page.do("offline") == {"offline": True}  # new connections fail; open ones live on
        assert cut_connections(streaming.port) >= 1
        page.until("the page notices the drop", lambda state: len(state["errors"]) > len(before["errors"]))
        missed_new, _, _ = http("POST", "/api/tasks", json={"title": "made while offline"})
        gone, _, _ = http("POST", "/api/tasks", json={"title": "made and deleted while offline"})
        http("DELETE", f"/api/tasks/{gone['id']}")
        by_assistant, _, _ = mcp(service, alice, "add_task", title="added by the assistant while offline")
        mcp(service, alice, "update_task", task_id=missed_new["id"], title="renamed by the assistant while offline")
        http("PATCH", f"/api/tasks/{kept['id']}/complete", json={"completed": False})
        assert len(page.do("state")["events"]) == len(before["events"]), "a change reached a page that was offline"

        online = time.time()
        assert page.do("online") == {"offline": False}
        expected = _by_id(server_tasks(alice.http))
        state = page.until("the page catches up", lambda state: state["tasks"] == expected)
        print(f"caught up {state['events'][-1]['at'] / 1000 - online:.3f} s after the network came back")
        assert state["opened"] == 2 and state["resets"] == 0, state  # resumed, not started again
        caught_up = [(event["type"], event["id"]) for event in state["events"][len(before["events"]) :]]
        assert sorted(caught_up) == sorted(
            [
                ("upsert", missed_new["id"]),
                ("delete", gone["id"]),
                ("upsert", by_assistant["id"]),
                ("upsert", kept["id"]),
            ]
        )
        positions = [event["position"] for event in state["events"] if event["position"] is not None]
        assert len(positions) == len(set(positions)), "a change delivered twice"

        # And live again.
        _, sent, _ = http("POST", "/api/tasks", json={"title": "after the drop"})
        total = len(before["events"]) + len(caught_up) + 1
        state = page.until("a change after the drop", lambda state: len(state["events"]) == total)
        print(f"after the drop: on the page {state['events'][-1]['at'] / 1000 - sent:.3f} s after it was sent")
        assert state["tasks"] == _by_id(server_tasks(alice.http))
        assert state["stopped"] is None
    finally:
        uncaught = page.close()
        alice.http.close()
    assert uncaught == []


def _by_id(tasks: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tasks keyed as the page's JSON has them."""
    return {str(id): task for id, task in tasks.items()}
