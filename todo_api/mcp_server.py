"""MCP (Model Context Protocol) tools made from the contract, for AI assistants: at /mcp and over stdio.

Every operation of the contract that carries `x-mcp-tool` is a tool. Its arguments are the
operation's parameters and JSON body fields (or those the extension maps), with the contract's
schemas and descriptions. A call is an ordinary request to the API carrying the caller's bearer
token, so validation, the 403 on a foreign `user_id`, row-level security and problem+json apply
unchanged; an error answer becomes a tool error with the problem's `detail`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from connexion.lifecycle import ConnexionRequest
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers import auth
from handlers.problems import Problem
from todo_api import problems
from todo_api.middleware import ErrorGuard
from todo_api.observability import RequestContext
from todo_api.settings import ConfigError

EXTENSION = "x-mcp-tool"
PATH = "/mcp"
API_TIMEOUT_SECONDS = 30
NO_TOKEN = "No authorization token provided"  # as the API words it
# OpenAPI 3.0 keywords that JSON Schema lacks or that mean nothing to a tool's caller.
_OPENAPI_ONLY = {"nullable", "readOnly", "writeOnly", "example", "xml", "externalDocs", "discriminator", "deprecated"}


@dataclass(frozen=True, slots=True)
class Argument:
    name: str  # the tool's
    location: str  # "path", "query", "header" or "body"
    key: str  # the contract's


@dataclass(frozen=True, slots=True)
class ContractTool:
    """One marked operation: its MCP definition, and how a call becomes the HTTP request."""

    definition: types.Tool
    method: str
    path: str
    arguments: tuple[Argument, ...]
    fixed_body: Mapping[str, Any]
    body_required: bool
    has_body: bool
    outcomes: Mapping[str, str]  # response descriptions by status, said for an answer without a body

    async def call(
        self, client: httpx.AsyncClient, authorization: str, given: Mapping[str, Any]
    ) -> types.CallToolResult:
        unknown = sorted(set(given) - {argument.name for argument in self.arguments})
        if unknown:
            expected = ", ".join(argument.name for argument in self.arguments)
            return _failure(f"{self.definition.name} takes {expected}; not {', '.join(unknown)}")
        path, query, body = self.path, {}, dict(self.fixed_body)
        headers = {"Authorization": authorization}
        for argument in self.arguments:
            value = given.get(argument.name)
            if argument.location == "body" and argument.name in given:
                body[argument.key] = value  # null is meaningful here: it clears a field
            elif value is None:
                if argument.location == "path":
                    return _failure(f"{argument.name} is required")
            elif argument.location == "path":
                path = path.replace(f"{{{argument.key}}}", quote(str(value), safe=""))
            elif argument.location == "query":
                query[argument.key] = value
            else:
                headers[argument.key] = str(value)
        send_body = self.has_body and (bool(body) or self.body_required)
        try:
            response = await client.request(
                self.method, path, params=query, headers=headers, json=body if send_body else None
            )
        except httpx.TransportError as error:
            return _failure(f"the API at {client.base_url} cannot be reached ({type(error).__name__})")
        if response.is_success or response.is_redirect:
            text = response.text or self.outcomes.get(str(response.status_code), str(response.status_code))
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=False)
        return _failure(_problem_text(response))


def tools_from(spec: Mapping[str, Any]) -> dict[str, ContractTool]:
    """Every operation marked with EXTENSION, by tool name; ConfigError naming the operation if a marker is wrong."""
    tools: dict[str, ContractTool] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or EXTENSION not in operation:
                continue
            tool = _tool(spec, path, method, operation, item.get("parameters", []))
            if tool.definition.name in tools:
                raise ConfigError(f"{EXTENSION}: two operations are named {tool.definition.name!r}")
            tools[tool.definition.name] = tool
    return tools


def _tool(
    spec: Mapping[str, Any], path: str, method: str, operation: dict[str, Any], shared: list[dict[str, Any]]
) -> ContractTool:
    where = f"{EXTENSION} of {operation.get('operationId') or method.upper() + ' ' + path}"
    marker = operation[EXTENSION]
    marker = {"name": marker} if isinstance(marker, str) else marker
    if not isinstance(marker, dict) or not isinstance(marker.get("name"), str):
        raise ConfigError(f"{where}: give the tool's name, as `{EXTENSION}: NAME` or `{EXTENSION}: {{name: NAME}}`")
    fixed_body = marker.get("body", {})
    # Name → (location, JSON Schema, required); an operation's parameter overrides its path's.
    available: dict[str, tuple[str, dict[str, Any], bool]] = {}
    for parameter in (_resolve(spec, p) for p in [*shared, *operation.get("parameters", [])]):
        schema = _json_schema(spec, parameter.get("schema", {}))
        if "description" in parameter:
            schema["description"] = parameter["description"].strip()
        available[parameter["name"]] = (parameter["in"], schema, bool(parameter.get("required")))
    request_body = _resolve(spec, operation.get("requestBody", {}))
    body_required = bool(request_body.get("required"))
    if request_body:
        try:
            body_schema = _resolve(spec, request_body["content"]["application/json"]["schema"])
        except KeyError:
            raise ConfigError(f"{where}: only a JSON body can be a tool's arguments") from None
        for name, schema in body_schema.get("properties", {}).items():
            if name in available:
                raise ConfigError(f"{where}: {name!r} is both a parameter and a body field; map it in 'arguments'")
            if name not in fixed_body:
                field_required = body_required and name in body_schema.get("required", [])
                available[name] = ("body", _json_schema(spec, schema), field_required)
    mapping = marker.get("arguments") or {name: name for name in available}
    properties: dict[str, Any] = {}
    required: list[str] = []
    arguments: list[Argument] = []
    for name, key in mapping.items():
        if key not in available:
            raise ConfigError(f"{where}: the operation has no parameter or body field {key!r}")
        location, schema, is_required = available[key]
        properties[name] = schema
        if is_required:
            required.append(name)
        arguments.append(Argument(name, location, key))
    summary = [operation[key].strip() for key in ("summary", "description") if key in operation]
    definition = types.Tool(
        name=marker["name"],
        description=marker.get("description", "\n\n".join(summary)).strip(),
        inputSchema={"type": "object", "properties": properties, "required": required, "additionalProperties": False},
    )
    outcomes = {
        status: _resolve(spec, answer).get("description", "")
        for status, answer in operation["responses"].items()
        if not status.startswith(("4", "5"))
    }
    return ContractTool(
        definition=definition,
        method=method.upper(),
        path=path,
        arguments=tuple(arguments),
        fixed_body=fixed_body,
        body_required=body_required,
        has_body=bool(request_body),
        outcomes=outcomes,
    )


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """`node`, or what its local `$ref` (`#/components/…`) points at."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return dict(node)


def _json_schema(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 schema as self-contained JSON Schema: references inlined, `nullable` as a `null` type."""
    schema = _resolve(spec, schema)
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _OPENAPI_ONLY or key.startswith("x-"):
            continue
        if key == "properties":
            converted[key] = {name: _json_schema(spec, child) for name, child in value.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            converted[key] = _json_schema(spec, value)
        elif key in ("allOf", "anyOf", "oneOf"):
            converted[key] = [_json_schema(spec, child) for child in value]
        else:
            converted[key] = value
    if schema.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


def _failure(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _problem_text(response: httpx.Response) -> str:
    """`403 Forbidden: <detail>` from a problem+json answer (or its bare status line)."""
    try:
        problem = response.json()
        detail = problem["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text
    return f"{response.status_code} {response.reason_phrase}: {detail}".rstrip(": ")


def server(
    tools: Mapping[str, ContractTool], client: Callable[[], httpx.AsyncClient], authorization: Callable[[], str]
) -> Server:
    """An MCP server offering `tools`, each call sent through `client()` with `authorization()`."""
    mcp: Server = Server("todo-api")

    @mcp.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [tool.definition for tool in tools.values()]

    # The API validates the arguments, so the model reads the contract's messages, not jsonschema's.
    @mcp.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        tool = tools.get(name)
        if tool is None:
            return _failure(f"there is no tool named {name!r}")
        return await tool.call(client(), authorization(), arguments)

    return mcp


class Endpoint:
    """Streamable HTTP at PATH beside the API, for callers with a valid bearer token. Stateless, with
    JSON answers: no session lives in a worker, so any of `serve --workers N` can answer."""

    def __init__(self, spec: Mapping[str, Any], *, max_body_bytes: int) -> None:
        self._api: ASGIApp | None = None
        self._client: httpx.AsyncClient | None = None
        self._mcp = server(tools_from(spec), self._api_client, self._authorization)
        self._sessions = StreamableHTTPSessionManager(
            self._mcp, stateless=True, json_response=True, max_request_body_size=max_body_bytes
        )
        self._guarded = RequestContext(ErrorGuard(self._authenticated))

    def mounted_on(self, api: ASGIApp) -> ASGIApp:
        """`api`, with PATH answered here; tools call `api` in process, through all its middleware."""
        self._api = api

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == PATH:
                await self._guarded(scope, receive, send)
            else:
                await api(scope, receive, send)

        return route

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the application's lifespan, once `mounted_on` has given the API."""
        if self._api is None:
            raise RuntimeError("Endpoint.mounted_on must be called before the app starts")
        transport = httpx.ASGITransport(app=self._api)
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

    def _authorization(self) -> str:
        request = self._mcp.request_context.request
        if request is None:
            raise RuntimeError("a tool was called outside an HTTP request")
        return str(request.headers["authorization"])

    async def _authenticated(self, scope: Scope, receive: Receive, send: Send) -> None:
        """401 with a Bearer challenge unless the request carries a token the API accepts (MCP authorization)."""
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await _answer_problem(scope, receive, send, 401, NO_TOKEN)
            return
        try:
            await auth.verify_token(token.strip(), ConnexionRequest(scope))
        except Problem as error:
            await _answer_problem(scope, receive, send, int(error.status), str(error.detail), error.headers)
            return
        if scope["method"] != "POST":
            # Stateless: no stream for GET to hold open (the transport allows a 405), no session to DELETE.
            detail = f"{scope['method']} is not allowed here; use POST"
            await _answer_problem(scope, receive, send, 405, detail, {"Allow": "POST"})
            return
        await self._sessions.handle_request(scope, receive, send)


async def _answer_problem(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    answer = problems.response(status, detail, headers=dict(headers or {}))
    response = Response(answer.body, answer.status_code, answer.headers, media_type=answer.content_type)
    await response(scope, receive, send)


async def serve_stdio(spec: Mapping[str, Any], api_url: str, token: str) -> None:
    """The tools over stdin/stdout, each call an HTTP request to the service at `api_url` with `token`."""
    async with httpx.AsyncClient(base_url=api_url, timeout=API_TIMEOUT_SECONDS) as client:
        mcp = server(tools_from(spec), lambda: client, lambda: f"Bearer {token}")
        async with stdio_server() as (read, write):
            await mcp.run(read, write, mcp.create_initialization_options())
