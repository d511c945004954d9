"""The contract's MCP tools (todo_api.mcp_tools) served to AI assistants: at /mcp beside the API,
behind the same token check and request limits, and over stdio for a desktop assistant.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from io import TextIOWrapper
from typing import Any, cast

import anyio
import httpx
from connexion.lifecycle import ConnexionRequest
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers import auth, state
from handlers.problems import Problem
from todo_api import mcp_messages, problems
from todo_api.credentials import Credentials, FixedToken
from todo_api.mcp_tools import failure, tools_from

PATH = "/mcp"
API_TIMEOUT_SECONDS = 30
NO_TOKEN = "No authorization token provided"  # as the API words it


def server(
    spec: Mapping[str, Any], client: Callable[[], httpx.AsyncClient], credentials: Callable[[], Credentials]
) -> Server:
    """An MCP server offering the contract's tools, each call sent through `client()` with `credentials()`."""
    tools = tools_from(spec)
    mcp: Server = Server("todo-api", version=str(spec["info"]["version"]))

    @mcp.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [tool.definition for tool in tools.values()]

    # The API validates the arguments, so the model reads the contract's messages, not jsonschema's.
    @mcp.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        tool = tools.get(name)
        if tool is None:
            return failure(f"there is no tool named {name!r}")
        return await tool.call(client(), credentials(), arguments)

    return mcp


class Endpoint:
    """Streamable HTTP at PATH beside the API, for callers with a valid bearer token. Stateless, with
    JSON answers: no session lives in a worker, so any of `serve --workers N` can answer."""

    def __init__(self, spec: Mapping[str, Any], *, max_body_bytes: int) -> None:
        self._api: ASGIApp | None = None
        self._client: httpx.AsyncClient | None = None
        self._mcp = server(spec, self._api_client, self._credentials)
        self._sessions = StreamableHTTPSessionManager(
            self._mcp, stateless=True, json_response=True, max_request_body_size=max_body_bytes
        )

    def mounted_on(self, api: ASGIApp) -> ASGIApp:
        """`api`, with PATH answered here."""

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == PATH:
                await self._authenticated(scope, receive, send)
            else:
                await api(scope, receive, send)

        return route

    def calling(self, app: ASGIApp) -> None:
        """Tools call `app` in process: the whole application, through every guard it has."""
        self._api = app

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the application's lifespan, once `calling` has given the application."""
        if self._api is None:
            raise RuntimeError("Endpoint.calling must be called before the app starts")
        transport = httpx.ASGITransport(app=_internal(self._api))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://todo-api", timeout=API_TIMEOUT_SECONDS) as client,
            self._sessions.run(),
        ):
            self._client = client
            yield
            self._client = None

    def _api_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the MCP endpoint is not running")
        return self._client

    def _credentials(self) -> Credentials:
        request = self._mcp.request_context.request
        if request is None:
            raise RuntimeError("a tool was called outside an HTTP request")
        return FixedToken(str(request.headers["authorization"]).partition(" ")[2].strip())  # the caller's

    async def _authenticated(self, scope: Scope, receive: Receive, send: Send) -> None:
        """401 with a Bearer challenge unless the request carries a token the API accepts (MCP authorization)."""
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await problems.answer(scope, receive, send, 401, NO_TOKEN)
            return
        try:
            await auth.verify_token(token.strip(), ConnexionRequest(scope))
        except Problem as error:
            await problems.answer(scope, receive, send, int(error.status), str(error.detail), error.headers)
            return
        if scope["method"] != "POST":
            # Stateless: no stream for GET to hold open (the transport allows a 405), no session to DELETE.
            detail = f"{scope['method']} is not allowed here; use POST"
            await problems.answer(scope, receive, send, 405, detail, {"Allow": "POST"})
            return
        body = await _body(receive)
        try:
            _check(Headers(scope=scope).get("content-type", ""), body)
        except mcp_messages.Refused as refused:
            status = 400 if refused.code in (types.PARSE_ERROR, types.INVALID_REQUEST) else 200
            await Response(refused.reply(), status, media_type="application/json")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._sessions.handle_request(scope, replay, send)


def _internal(app: ASGIApp) -> ASGIApp:
    """`app`, for requests the application makes to itself: the MCP request was counted already."""

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, state.INTERNAL: True}, receive, send)

    return marked


async def _body(receive: Receive) -> bytes:
    """The whole request body (RequestLimits bounds its size)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check(content_type: str, body: bytes) -> None:
    """mcp_messages.Refused unless `body` is a message the SDK can answer, sent as UTF-8 as the API's are."""
    parameters = (part.strip().lower().partition("=") for part in content_type.split(";")[1:])
    charset = next((value.strip('"') for name, _, value in parameters if name.strip() == "charset"), "utf-8")
    if charset not in ("utf-8", "utf8"):
        raise mcp_messages.Refused(types.PARSE_ERROR, "Parse error: send the message as UTF-8 JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise mcp_messages.Refused(types.PARSE_ERROR, "Parse error: the message is not valid UTF-8") from None
    mcp_messages.check(text)


async def serve_stdio(spec: Mapping[str, Any], api_url: str, credentials: Credentials) -> None:
    """The tools over stdin/stdout, each call an HTTP request to the service at `api_url` with `credentials`."""
    stdout = _Lines(anyio.wrap_file(TextIOWrapper(sys.stdout.buffer, encoding="utf-8")))
    stdin = _Checked(anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")), stdout)
    async with httpx.AsyncClient(base_url=api_url, timeout=API_TIMEOUT_SECONDS) as client:
        mcp = server(spec, lambda: client, lambda: credentials)
        async with stdio_server(cast(Any, stdin), cast(Any, stdout)) as (read, write):
            await mcp.run(read, write, mcp.create_initialization_options())


class _Lines:
    """stdout for the SDK's writer and ours: one write or flush at a time (each runs in a thread)."""

    def __init__(self, file: anyio.AsyncFile[str]) -> None:
        self._file = file
        self._lock = anyio.Lock()

    async def write(self, text: str) -> None:
        async with self._lock:
            await self._file.write(text)

    async def flush(self) -> None:
        async with self._lock:
            await self._file.flush()


class _Checked:
    """stdin's messages that the SDK can answer; every other line is answered here, on `stdout`."""

    def __init__(self, lines: anyio.AsyncFile[str], stdout: _Lines) -> None:
        self._lines = lines
        self._stdout = stdout

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self._lines:
            if not line.strip():
                continue
            try:
                mcp_messages.check(line)
            except mcp_messages.Refused as refused:
                await self._stdout.write(refused.reply() + "\n")
                await self._stdout.flush()
                continue
            yield line
