"""MCP tools from the contract: a real MCP client (the official SDK) against `todo-api serve`'s /mcp,
and against `todo-api mcp` over stdio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import yaml
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import ROOT, SECRET, Service, User, mint
from todo_api.app import contract

# The operations openapi.yaml marks with x-mcp-tool.
CONTRACT_TOOLS = {"add_task", "list_tasks", "complete_task", "delete_task", "update_task"}
Result = TypeVar("Result")


@asynccontextmanager
async def connected(base_url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def over_http(service: Service, user: User, conversation: Callable[[ClientSession], Awaitable[Result]]) -> Result:
    async def run() -> Result:
        async with connected(service.base_url, user.token) as session:
            return await conversation(session)

    return anyio.run(run)


def answer(result: types.CallToolResult) -> Any:
    assert not result.isError, result.content
    return json.loads(_text(result))


def _text(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def _stored(db: Engine, user_id: str) -> int:
    with db.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM tasks WHERE user_id = :id"), {"id": user_id})


def test_the_contract_s_tools_are_listed_with_its_schemas_and_descriptions(service: Service, alice: User) -> None:
    listed = over_http(service, alice, lambda session: session.list_tools())
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == CONTRACT_TOOLS
    components = contract()["components"]
    add = tools["add_task"].inputSchema
    assert add["required"] == ["user_id", "title"]
    assert add["properties"]["user_id"]["description"] == components["parameters"]["UserId"]["description"]
    assert add["properties"]["title"]["pattern"] == components["schemas"]["Title"]["pattern"]
    assert add["properties"]["description"]["type"] == ["string", "null"]  # nullable, in JSON Schema
    assert add["properties"]["description"]["maxLength"] == components["schemas"]["Description"]["maxLength"]
    status = tools["list_tasks"].inputSchema["properties"]["status"]
    assert {"all", "pending", "completed"} <= set(status["enum"])
    assert status["enum"] == components["parameters"]["Status"]["schema"]["enum"]
    for name in ("complete_task", "delete_task"):
        schema = tools[name].inputSchema
        assert set(schema["properties"]) == {"user_id", "task_id"} == set(schema["required"])
        assert schema["properties"]["task_id"]["type"] == "integer"
    assert set(tools["update_task"].inputSchema["properties"]) == {"user_id", "task_id", "title", "description"}
    assert all(tool.description for tool in tools.values())


def test_a_conversation_adds_lists_updates_completes_twice_and_deletes(service: Service, alice: User) -> None:
    async def conversation(session: ClientSession) -> None:
        me = alice.id
        added = answer(await session.call_tool("add_task", {"user_id": me, "title": "Buy milk", "description": "2 l"}))
        assert (added["title"], added["description"], added["completed"]) == ("Buy milk", "2 l", False)
        task = {"user_id": me, "task_id": added["id"]}

        pending = answer(await session.call_tool("list_tasks", {"user_id": me, "status": "pending"}))
        assert [row["id"] for row in pending] == [added["id"]]
        everything = answer(await session.call_tool("list_tasks", {"user_id": me}))
        assert [row["id"] for row in everything] == [added["id"]]

        updated = answer(await session.call_tool("update_task", {**task, "title": "Buy oat milk", "description": None}))
        assert (updated["title"], updated["description"]) == ("Buy oat milk", None)

        unknown = await session.call_tool("update_task", {**task, "completed": False})
        assert unknown.isError
        assert _text(unknown) == "update_task takes user_id, task_id, title, description; not completed"

        for _ in range(2):  # a model that retries must not toggle it back
            assert answer(await session.call_tool("complete_task", task))["completed"] is True
        assert answer(await session.call_tool("list_tasks", {"user_id": me, "status": "pending"})) == []
        completed = answer(await session.call_tool("list_tasks", {"user_id": me, "status": "completed"}))
        assert [row["id"] for row in completed] == [added["id"]]

        deleted = await session.call_tool("delete_task", task)
        assert not deleted.isError
        gone = await session.call_tool("complete_task", task)
        assert gone.isError and _text(gone).startswith("404 ")

    over_http(service, alice, conversation)
    assert alice.http.get("/api/tasks").json() == []


def test_add_task_for_another_user_is_refused_with_the_403_detail_and_nothing_is_stored(
    service: Service, alice: User, bob: User, db: Engine
) -> None:
    refused = over_http(
        service, alice, lambda session: session.call_tool("add_task", {"user_id": bob.id, "title": "not yours"})
    )
    assert refused.isError
    problem = alice.http.post(f"/api/{bob.id}/tasks", json={"title": "not yours"}).json()
    assert _text(refused) == f"403 Forbidden: {problem['detail']}"
    assert _stored(db, bob.id) == 0
    assert _stored(db, alice.id) == 0


def test_the_contract_s_validation_reaches_the_model_as_a_tool_error(service: Service, alice: User, db: Engine) -> None:
    refused = over_http(
        service, alice, lambda session: session.call_tool("add_task", {"user_id": alice.id, "title": " "})
    )
    assert refused.isError
    problem = alice.http.post("/api/tasks", json={"title": " "}).json()
    assert _text(refused) == f"422 Unprocessable Entity: {problem['detail']}"
    assert _stored(db, alice.id) == 0


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"])
def test_mcp_without_a_valid_bearer_token_is_401_with_a_bearer_challenge(
    service: Service, authorization: str | None
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    response = httpx.post(f"{service.base_url}/mcp", json=initialize, headers=headers, timeout=10)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="todo-api"')
    assert response.headers["content-type"].startswith("application/problem+json")
    if authorization is None:  # worded as the API words it
        assert response.json()["detail"] == httpx.get(f"{service.base_url}/api/tasks").json()["detail"]
    if authorization == "Bearer not-a-jwt":
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_mcp_answers_post_only_and_bounds_the_body_like_the_api(service: Service, alice: User) -> None:
    headers = {"Authorization": f"Bearer {alice.token}", "Accept": "application/json, text/event-stream"}
    for method in ("GET", "DELETE"):  # stateless: no stream to hold open, no session to end
        refused = httpx.request(method, f"{service.base_url}/mcp", headers=headers, timeout=10)
        assert refused.status_code == 405, refused.text
        assert refused.headers["allow"] == "POST"
    too_large = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"padding": "x" * 70_000}}
    response = httpx.post(f"{service.base_url}/mcp", json=too_large, headers=headers, timeout=10)
    assert response.status_code == 413, response.text


def test_an_expired_token_is_refused_by_the_mcp_client_as_401(service: Service) -> None:
    async def attempt() -> None:
        async with connected(service.base_url, mint("someone", ttl=-120)):
            pass

    refused = pytest.RaisesExc(httpx.HTTPStatusError, check=lambda error: error.response.status_code == 401)
    with pytest.RaisesGroup(refused, flatten_subgroups=True):  # the SDK's task group re-raises it
        anyio.run(attempt)


def test_a_tool_call_logs_the_api_s_access_line_but_no_query_string_or_token(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(LOG_LEVEL="INFO")
    alice = User(service.base_url)
    secret_words = "sesame-" + alice.id
    over_http(
        service, alice, lambda session: session.call_tool("list_tasks", {"user_id": alice.id, "status": "pending"})
    )
    alice.create(title=secret_words)
    over_http(
        service, alice, lambda session: session.call_tool("add_task", {"user_id": alice.id, "title": secret_words})
    )
    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    access = [(line["path"], line["operation"]) for line in lines if line["logger"] == "todo_api.access"]
    assert (f"/api/{alice.id}/tasks", "handlers.user_tasks.find") in access
    assert ("/mcp", "none") in access
    assert "status=pending" not in service.output()
    assert alice.token not in service.output()
    assert secret_words not in service.output()


@pytest.fixture
def marked_contract(tmp_path: Path) -> Path:
    """openapi.yaml with one more operation (the compatibility form's GET of a task) marked for MCP."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    operation = spec["paths"]["/api/{user_id}/tasks/{id}"]["get"]
    assert "x-mcp-tool" not in operation
    operation["x-mcp-tool"] = {"name": "get_task", "arguments": {"user_id": "user_id", "task_id": "id"}}
    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def test_an_operation_marked_in_the_contract_becomes_a_tool_without_code_changes(
    start_service: Callable[..., Service], marked_contract: Path
) -> None:
    service = start_service(OPENAPI_FILE=str(marked_contract))
    alice = User(service.base_url)
    created = alice.create(title="Read me")

    async def conversation(session: ClientSession) -> tuple[types.ListToolsResult, types.CallToolResult]:
        listed = await session.list_tools()
        return listed, await session.call_tool("get_task", {"user_id": alice.id, "task_id": created["id"]})

    listed, fetched = over_http(service, alice, conversation)
    get_task = next(tool for tool in listed.tools if tool.name == "get_task")
    assert get_task.description == "Get one task (compatibility form)"
    assert set(get_task.inputSchema["required"]) == {"user_id", "task_id"}
    assert {tool.name for tool in listed.tools} == {*CONTRACT_TOOLS, "get_task"}
    assert answer(fetched) == created


def test_a_wrong_marker_stops_the_start_with_one_line_naming_the_operation(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    spec["paths"]["/api/{user_id}/tasks/{id}"]["delete"]["x-mcp-tool"]["arguments"]["task_id"] = "task"
    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    env = {**os.environ, "OPENAPI_FILE": str(path), "BETTER_AUTH_SECRET": SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "todo_api.cli", "check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == (
        "todo-api: configuration error: x-mcp-tool of user_tasks.delete: "
        "the operation has no parameter or body field 'task'\n"
    )


def test_todo_api_mcp_without_a_token_says_which_variable_is_missing() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TODO_API_")}
    result = subprocess.run(
        [sys.executable, "-m", "todo_api.cli", "mcp"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("todo-api: configuration error: TODO_API_TOKEN is required")
    assert result.stdout == ""


@pytest.fixture
def stdio_env(service: Service) -> Callable[[User], dict[str, str]]:
    def env(user: User) -> dict[str, str]:
        return {
            **{key: value for key, value in os.environ.items() if not key.startswith(("TODO_API_", "DATABASE_URL"))},
            "TODO_API_URL": service.base_url,
            "TODO_API_TOKEN": user.token,
        }

    return env


def test_todo_api_mcp_serves_the_tools_over_stdio_with_the_token_from_the_environment(
    stdio_env: Callable[[User], dict[str, str]], alice: User, bob: User
) -> None:
    command = StdioServerParameters(command=sys.executable, args=["-m", "todo_api.cli", "mcp"], env=stdio_env(alice))

    async def conversation() -> None:
        async with stdio_client(command) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == CONTRACT_TOOLS
            added = answer(await session.call_tool("add_task", {"user_id": alice.id, "title": "From the desktop"}))
            listed = answer(await session.call_tool("list_tasks", {"user_id": alice.id, "status": "all"}))
            assert [task["id"] for task in listed] == [added["id"]]
            foreign = await session.call_tool("list_tasks", {"user_id": bob.id})
            assert foreign.isError and _text(foreign).startswith("403 ")

    anyio.run(conversation)
    assert [task["title"] for task in alice.http.get("/api/tasks").json()] == ["From the desktop"]
