"""MCP (Model Context Protocol) tools made from the contract.

Every operation of the contract that carries `x-mcp-tool` is a tool. Its arguments are the
operation's path and query parameters and its JSON body's fields, with the contract's schemas and
descriptions (the marker may rename some, leave some out, or fix the body); its result is the
answer's JSON as structured content, described by the contract's response schema, and a list's
page says whether more exist and how to get them. A call is an ordinary request to the API
carrying the caller's bearer token, so validation, the 403 on a foreign `user_id`, row-level
security and problem+json apply unchanged; an error answer becomes a tool error in words.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
import jwt
import orjson
from jsonschema import Draft202012Validator
from mcp import types

from todo_api.credentials import CredentialError, Credentials
from todo_api.settings import ConfigError

EXTENSION = "x-mcp-tool"
IDEMPOTENCY_KEY = "Idempotency-Key"
RETRIES = 3  # beyond the first attempt, for a tool whose operation takes an Idempotency-Key
RETRY_PAUSE_SECONDS = 2.0  # the service's Retry-After for a 503
# OpenAPI 3.0 keywords that JSON Schema lacks or that mean nothing to a tool's caller; a `pattern`
# is for the API's validator (it answers in words, below), not for a model to read.
_OPENAPI_ONLY = {
    "nullable",
    "readOnly",
    "writeOnly",
    "example",
    "xml",
    "externalDocs",
    "discriminator",
    "deprecated",
    "pattern",
}
_IDEMPOTENT_METHODS = {"GET", "PUT", "DELETE"}  # RFC 9110; others only where the marker says so
NEXT_CURSOR = "next_cursor"
MORE = "more"


@dataclass(frozen=True, slots=True)
class Argument:
    name: str  # the tool's
    location: str  # "path", "query" or "body"
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
    page_key: str | None  # for an operation answering a JSON array: the key of its items in the result
    idempotency_header: str | None = None  # the operation's Idempotency-Key: each call sends its own

    async def call(
        self, client: httpx.AsyncClient, credentials: Credentials, given: Mapping[str, Any]
    ) -> types.CallToolResult:
        unknown = sorted(set(given) - {argument.name for argument in self.arguments})
        if unknown:
            expected = ", ".join(argument.name for argument in self.arguments)
            return failure(f"{self.definition.name} takes {expected}; not {', '.join(unknown)}")
        path, query, body = self.path, {}, dict(self.fixed_body)
        for argument in self.arguments:
            value = given.get(argument.name)
            if argument.location == "body" and argument.name in given:
                body[argument.key] = value  # null is meaningful here: it clears a field
            elif argument.location == "path":
                if value is None:
                    return failure(f"{argument.name} is required")
                segment = self._path_segment(argument.name, value)
                if segment is None:
                    return failure(f"{argument.name} is not a valid {argument.name.replace('_', ' ')}")
                path = path.replace(f"{{{argument.key}}}", segment)
            elif value is not None:
                query[argument.key] = value
        json_body = body if self.has_body and (bool(body) or self.body_required) else None
        key = {self.idempotency_header: uuid.uuid4().hex} if self.idempotency_header else {}

        async def send(authorization: str) -> httpx.Response:
            headers = {"Authorization": authorization, **key}
            request = client.build_request(self.method, path, params=query, headers=headers, json=json_body)
            return await self._send(client, request)

        try:
            authorization = await credentials.authorization()
            response = await send(authorization)
            if response.status_code == 401 and credentials.refreshable:
                authorization = await credentials.authorization(refresh=True)
                response = await send(authorization)
        except CredentialError as error:
            return failure(str(error))
        except httpx.TransportError as error:
            return failure(f"the API at {client.base_url} cannot be reached ({type(error).__name__})")
        if response.is_success or response.is_redirect:
            return self._result(response)
        if response.status_code == 403 and (foreign := self._foreign_user(given, authorization)):
            return failure(foreign)
        return failure(_problem_text(response))

    def _path_segment(self, name: str, value: Any) -> str | None:
        """`value` as the path segment it fills, or None when it is not one the contract admits
        (a dot segment would move the request to another path)."""
        schema = self.definition.inputSchema["properties"][name]
        if value in ("", ".", "..") or not Draft202012Validator(schema).is_valid(value):
            return None
        return quote(str(value), safe="")

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """The answer to `request`. A create carries an Idempotency-Key of its own, so that it is
        retried with that key while the service is unavailable (a 503 may follow a commit)."""
        if self.idempotency_header is None:
            return await client.send(request)
        for _ in range(RETRIES):
            try:
                response = await client.send(request)
            except httpx.TransportError:
                pass
            else:
                if response.status_code != 503:
                    return response
            await anyio.sleep(RETRY_PAUSE_SECONDS)
        return await client.send(request)

    def _result(self, response: httpx.Response) -> types.CallToolResult:
        if not response.content:
            text = self.outcomes.get(str(response.status_code), str(response.status_code))
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=False)
        answer: Any = response.json()
        if self.page_key is not None:
            cursor = _next_cursor(response)
            answer = {self.page_key: answer, NEXT_CURSOR: cursor, MORE: cursor is not None}
        text = orjson.dumps(answer).decode()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structuredContent=answer, isError=False
        )

    def _foreign_user(self, given: Mapping[str, Any], authorization: str) -> str | None:
        """For a refused `user_id`: whose token this is, said so that the model can call again."""
        if not any(argument.key == "user_id" and argument.location == "path" for argument in self.arguments):
            return None
        owner = _subject(authorization)
        if owner is None or owner == given.get("user_id"):
            return None
        return (
            f"403 Forbidden: user_id {given.get('user_id')!r} is not the signed-in user. This token belongs to "
            f"user {owner!r}: call {self.definition.name} again with user_id {owner!r}."
        )


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
    # Headers (If-Match, Idempotency-Key) are HTTP's business, not a model's.
    available: dict[str, tuple[str, dict[str, Any], bool]] = {}
    idempotency_header = None
    for parameter in (_resolve(spec, p) for p in [*shared, *operation.get("parameters", [])]):
        if parameter["in"] == "header":
            if parameter["name"] == IDEMPOTENCY_KEY:
                idempotency_header = parameter["name"]  # each call sends a key of its own
            continue
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
                raise ConfigError(f"{where}: {name!r} is both a parameter and a body field; rename one")
            if name not in fixed_body:
                field_required = body_required and name in body_schema.get("required", [])
                available[name] = ("body", _json_schema(spec, schema), field_required)
    renamed = marker.get("rename", {})
    left_out = set(marker.get("omit", []))
    for key in [*renamed, *left_out]:
        if key not in available:
            raise ConfigError(f"{where}: the operation has no parameter or body field {key!r}")
    success = _success(spec, operation)
    page_key = _page_key(success)
    if page_key is not None and "cursor" in available:
        available["cursor"][1]["description"] = (
            f"`{NEXT_CURSOR}` of the previous result, for the next page (same other arguments)."
        )
    properties: dict[str, Any] = {}
    required: list[str] = []
    arguments: list[Argument] = []
    for key, (location, schema, is_required) in available.items():
        if key in left_out:
            continue
        name = renamed.get(key, key)
        properties[name] = schema
        if is_required:
            required.append(name)
        arguments.append(Argument(name, location, key))
    summary = [operation[key].strip() for key in ("summary", "description") if key in operation]
    http_method = method.upper()
    read_only = http_method == "GET"
    definition = types.Tool(
        name=marker["name"],
        description=marker.get("description", "\n\n".join(summary)).strip(),
        inputSchema={"type": "object", "properties": properties, "required": required, "additionalProperties": False},
        outputSchema=_output_schema(spec, success, page_key),
        annotations=types.ToolAnnotations(
            title=operation.get("summary"),
            readOnlyHint=read_only,
            destructiveHint=None if read_only else http_method == "DELETE",
            idempotentHint=http_method in _IDEMPOTENT_METHODS or bool(marker.get("idempotent")),
            openWorldHint=False,  # only this service's own tasks
        ),
    )
    outcomes = {
        status: _resolve(spec, answer).get("description", "")
        for status, answer in operation["responses"].items()
        if not status.startswith(("4", "5"))
    }
    return ContractTool(
        definition=definition,
        method=http_method,
        path=path,
        arguments=tuple(arguments),
        fixed_body=fixed_body,
        body_required=body_required,
        has_body=bool(request_body),
        outcomes=outcomes,
        page_key=page_key,
        idempotency_header=idempotency_header,
    )


def _success(spec: Mapping[str, Any], operation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of the operation's first 2xx answer that has one (as written: `$ref`s kept)."""
    for status, answer in sorted(operation["responses"].items()):
        if status.startswith("2"):
            content = _resolve(spec, answer).get("content", {})
            if "application/json" in content:
                schema: dict[str, Any] = content["application/json"]["schema"]
                return schema
    return None


def _page_key(success: Mapping[str, Any] | None) -> str | None:
    """For an answer that is an array of `#/components/schemas/Task`: "tasks", the key of a page's items."""
    if success is None or success.get("type") != "array":
        return None
    reference = success.get("items", {}).get("$ref", "")
    return reference.rpartition("/")[2].lower() + "s" if reference else "items"


def _output_schema(
    spec: Mapping[str, Any], success: Mapping[str, Any] | None, page_key: str | None
) -> dict[str, Any] | None:
    """The tool's result as JSON Schema: the answer's object, or a page of the answer's array."""
    if success is None:
        return None
    schema = _json_schema(spec, success)
    if page_key is None:
        return schema if schema.get("type") == "object" else None
    return {
        "type": "object",
        "properties": {
            page_key: schema,
            NEXT_CURSOR: {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last.",
            },
            MORE: {"type": "boolean", "description": "Whether more exist beyond this page."},
        },
        "required": [page_key, NEXT_CURSOR, MORE],
    }


def _next_cursor(response: httpx.Response) -> str | None:
    """The `cursor` of the answer's `Link: <…>; rel="next"`, if any."""
    link = response.links.get("next", {}).get("url")
    return parse_qs(urlsplit(link).query).get("cursor", [None])[0] if link else None


def _subject(authorization: str) -> str | None:
    """The user a bearer token names: `sub`, or `user.id` for Better Auth's cookie-cache token. Read
    without verifying: the API verified it before answering 403."""
    try:
        claims = jwt.decode(authorization.partition(" ")[2], options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    user = claims.get("user")
    subject = claims.get("sub", user.get("id") if isinstance(user, dict) else None)
    return subject if isinstance(subject, str) else None


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
    if "pattern" in schema and "description" not in converted and "x-message" in schema:
        message = schema["x-message"]  # the API's own words for what the pattern checks
        converted["description"] = message[:1].upper() + message[1:] + "."
    if schema.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


def failure(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _problem_text(response: httpx.Response) -> str:
    """`403 Forbidden: <detail>` from a problem+json answer (or its bare status line)."""
    try:
        problem = response.json()
        detail = problem["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text
    return f"{response.status_code} {response.reason_phrase}: {detail}".rstrip(": ")
