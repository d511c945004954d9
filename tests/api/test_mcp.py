"""MCP tools from the contract: a real MCP client (the official SDK) against `todo-api serve`'s /mcp,
and against `todo-api mcp` over stdio."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import yaml
from mcp import ClientSession, types
from sqlalchemy.engine import Engine

from tests.support import ROOT
from tests.support.mcp import CONTRACT_TOOLS, answer, connected, listed, text_of
from tests.support.service import Service
from tests.support.sync import EventStream, Replica, server_tasks
from tests.support.tokens import mint
from tests.support.users import User, task_count
from todo_api.app import contract

Result = TypeVar("Result")


def over_http(service: Service, user: User, conversation: Callable[[ClientSession], Awaitable[Result]]) -> Result:
    async def run() -> Result:
        async with connected(service.base_url, user.token) as session:
            return await conversation(session)

    return anyio.run(run)


def test_the_contract_s_tools_are_listed_with_its_schemas_and_descriptions(service: Service, alice: User) -> None:
    listing = over_http(service, alice, lambda session: session.list_tools())
    tools = {tool.name: tool for tool in listing.tools}
    assert set(tools) == CONTRACT_TOOLS
    components = contract()["components"]
    schemas = components["schemas"]
    add = tools["add_task"].inputSchema
    assert add["required"] == ["user_id", "title"]
    # Every field a create takes, straight from the contract: new fields need no change here.
    assert set(add["properties"]) == {"user_id", *schemas["TaskCreate"]["properties"]}
    assert add["properties"]["user_id"]["description"] == components["parameters"]["UserId"]["description"]
    assert add["properties"]["title"]["description"] == schemas["Title"]["description"].strip()
    assert add["properties"]["description"]["type"] == ["string", "null"]  # nullable, in JSON Schema
    assert add["properties"]["description"]["maxLength"] == schemas["Description"]["maxLength"]
    assert add["properties"]["priority"]["enum"] == schemas["Priority"]["enum"]
    assert add["properties"]["tags"]["items"]["description"].startswith("Must be 1–32 characters")
    assert "pattern" not in json.dumps([tool.inputSchema for tool in tools.values()]), "regexes are the API's to check"
    update = tools["update_task"].inputSchema
    assert set(update["properties"]) == {"user_id", "task_id", *schemas["TaskPatch"]["properties"]}
    assert update["required"] == ["user_id", "task_id"]
    listing_arguments = tools["list_tasks"].inputSchema["properties"]
    filters = {"status", "q", "priority", "tag", "due_before", "due_after", "overdue", "recurring", "has_reminder"}
    assert {*filters, "sort", "limit", "cursor"} == (set(listing_arguments) - {"user_id"}), (
        "every filter, and paging; not the aliases"
    )
    status = listing_arguments["status"]
    assert status["enum"] == components["parameters"]["Status"]["schema"]["enum"]
    for name in ("complete_task", "delete_task", "get_task"):
        schema = tools[name].inputSchema
        assert set(schema["properties"]) == {"user_id", "task_id"} == set(schema["required"])
        assert schema["properties"]["task_id"]["type"] == "integer"
    assert all(tool.description for tool in tools.values())


def test_results_are_described_by_the_contract_s_response_schemas_and_annotated_from_the_method(
    service: Service, alice: User
) -> None:
    async def conversation(session: ClientSession) -> tuple[types.InitializeResult, types.ListToolsResult]:
        return await session.initialize(), await session.list_tools()

    initialized, listing = over_http(service, alice, conversation)
    assert initialized.serverInfo.version == contract()["info"]["version"]
    tools = {tool.name: tool for tool in listing.tools}
    task = contract()["components"]["schemas"]["Task"]
    for name in ("add_task", "get_task", "update_task", "complete_task"):
        output = tools[name].outputSchema
        assert output and output["type"] == "object" and set(output["properties"]) == set(task["properties"])
        assert output["required"] == task["required"]
    page = tools["list_tasks"].outputSchema
    assert page and page["required"] == ["tasks", "next_cursor", "more"]
    assert page["properties"]["tasks"]["items"] == tools["get_task"].outputSchema
    assert tools["delete_task"].outputSchema is None  # 204: no body
    hints = {
        name: (tool.annotations.readOnlyHint, tool.annotations.destructiveHint, tool.annotations.idempotentHint)
        for name, tool in tools.items()
        if tool.annotations
    }
    assert hints == {
        "list_tasks": (True, None, True),
        "get_task": (True, None, True),
        "add_task": (False, False, False),
        "update_task": (False, False, True),
        "complete_task": (False, False, True),
        "delete_task": (False, True, True),
    }
    assert all(tool.annotations and tool.annotations.openWorldHint is False for tool in tools.values())


def test_list_tasks_pages_and_says_when_more_exist(service: Service, alice: User) -> None:
    created = [alice.create(title=f"task {number}", priority="high" if number % 2 else "low") for number in range(5)]

    async def conversation(session: ClientSession) -> list[dict[str, Any]]:
        pages = [answer(await session.call_tool("list_tasks", {"user_id": alice.id, "limit": 2}))]
        while pages[-1]["more"]:
            cursor = pages[-1]["next_cursor"]
            pages.append(
                answer(await session.call_tool("list_tasks", {"user_id": alice.id, "limit": 2, "cursor": cursor}))
            )
        high = listed(await session.call_tool("list_tasks", {"user_id": alice.id, "priority": ["high"], "q": "task"}))
        assert [task["id"] for task in high] == [task["id"] for task in reversed(created) if task["priority"] == "high"]
        return pages

    pages = over_http(service, alice, conversation)
    assert [len(page["tasks"]) for page in pages] == [2, 2, 1]
    assert [page["more"] for page in pages] == [True, True, False]
    assert pages[-1]["next_cursor"] is None
    assert [task["id"] for page in pages for task in page["tasks"]] == [task["id"] for task in reversed(created)]


def test_a_conversation_adds_lists_updates_completes_twice_and_deletes(service: Service, alice: User) -> None:
    async def conversation(session: ClientSession) -> None:
        me = alice.id
        fields = {"title": "Buy milk", "description": "2 l", "priority": "high", "tags": ["shopping"]}
        added = answer(
            await session.call_tool("add_task", {"user_id": me, **fields, "due_date": "2030-01-31T17:00:00Z"})
        )
        assert {key: added[key] for key in fields} == fields
        assert (added["completed"], added["due_date"]) == (False, "2030-01-31T17:00:00Z")
        task = {"user_id": me, "task_id": added["id"]}
        assert answer(await session.call_tool("get_task", task)) == added

        pending = listed(await session.call_tool("list_tasks", {"user_id": me, "status": "pending"}))
        assert [row["id"] for row in pending] == [added["id"]]
        everything = listed(await session.call_tool("list_tasks", {"user_id": me}))
        assert [row["id"] for row in everything] == [added["id"]]
        due = {
            "user_id": me,
            "due_after": "2030-01-01T00:00:00Z",
            "due_before": "2030-02-01T00:00:00Z",
            "tag": ["shopping"],
        }
        assert [row["id"] for row in listed(await session.call_tool("list_tasks", due))] == [added["id"]]

        changes = {"title": "Buy oat milk", "description": None, "due_date": None, "priority": "low"}
        updated = answer(await session.call_tool("update_task", {**task, **changes}))
        assert {key: updated[key] for key in changes} == changes

        unknown = await session.call_tool("update_task", {**task, "owner": "someone"})
        assert unknown.isError
        assert text_of(unknown).startswith("update_task takes user_id, task_id, ")
        assert text_of(unknown).endswith("; not owner")

        for _ in range(2):  # a model that retries must not toggle it back
            assert answer(await session.call_tool("complete_task", task))["completed"] is True
        assert listed(await session.call_tool("list_tasks", {"user_id": me, "status": "pending"})) == []
        completed = listed(await session.call_tool("list_tasks", {"user_id": me, "status": "completed"}))
        assert [row["id"] for row in completed] == [added["id"]]

        deleted = await session.call_tool("delete_task", task)
        assert not deleted.isError
        gone = await session.call_tool("complete_task", task)
        assert gone.isError and text_of(gone).startswith("404 ")

    over_http(service, alice, conversation)
    assert alice.http.get("/api/tasks").json() == []


def test_add_task_for_another_user_is_refused_naming_the_token_s_user_and_nothing_is_stored(
    service: Service, alice: User, bob: User, db: Engine
) -> None:
    refused = over_http(
        service, alice, lambda session: session.call_tool("add_task", {"user_id": bob.id, "title": "not yours"})
    )
    assert refused.isError
    assert text_of(refused) == (
        f"403 Forbidden: user_id {bob.id!r} is not the signed-in user. This token belongs to user {alice.id!r}: "
        f"call add_task again with user_id {alice.id!r}."
    )
    assert task_count(db, bob) == 0
    assert task_count(db, alice) == 0


def test_the_contract_s_validation_reaches_the_model_as_a_tool_error(service: Service, alice: User, db: Engine) -> None:
    refused = over_http(
        service, alice, lambda session: session.call_tool("add_task", {"user_id": alice.id, "title": " "})
    )
    assert refused.isError
    problem = alice.http.post("/api/tasks", json={"title": " "}).json()
    assert text_of(refused) == f"422 Unprocessable Entity: {problem['detail']}"
    assert task_count(db, alice) == 0


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
    """openapi.yaml with one more operation (the compatibility form's PUT of a task) marked for MCP."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    operation = spec["paths"]["/api/{user_id}/tasks/{id}"]["put"]
    assert "x-mcp-tool" not in operation
    operation["x-mcp-tool"] = {"name": "replace_task", "rename": {"id": "task_id"}}
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
        listing = await session.list_tools()
        renamed = {"user_id": alice.id, "task_id": created["id"], "title": "Read me twice"}
        return listing, await session.call_tool("replace_task", renamed)

    listing, replaced = over_http(service, alice, conversation)
    replace_task = next(tool for tool in listing.tools if tool.name == "replace_task")
    assert replace_task.description.startswith("Replace a task (compatibility form)")
    assert set(replace_task.inputSchema["required"]) == {"user_id", "task_id", "title"}
    assert replace_task.annotations and replace_task.annotations.idempotentHint is True  # PUT
    assert {tool.name for tool in listing.tools} == {*CONTRACT_TOOLS, "replace_task"}
    assert answer(replaced) == alice.http.get(f"/api/tasks/{created['id']}").json()
    assert answer(replaced)["title"] == "Read me twice"


def test_an_assistants_changes_reach_the_open_streams_and_the_feed(service: Service, alice: User) -> None:
    """An assistant (MCP) changing tasks while the person looks: the open tab sees each change."""
    with EventStream(service.base_url, alice.token) as stream:

        async def conversation(session: ClientSession) -> None:
            added = answer(await session.call_tool("add_task", {"user_id": alice.id, "title": "From the assistant"}))
            await session.call_tool("complete_task", {"user_id": alice.id, "task_id": added["id"]})

        over_http(service, alice, conversation)
        seen = []
        while not seen or seen[-1]["status"] != "complete":  # one event, or two if it read in between
            event = stream.next()
            assert event is not None and event.type == "upsert"
            seen.append(event.data["task"])
    assert {task["title"] for task in seen} == {"From the assistant"}
    replica = Replica()
    replica.follow(alice.http)
    assert replica.tasks == server_tasks(alice.http)


def test_an_assistant_sets_a_recurring_task_with_a_reminder_and_completing_it_schedules_the_next(
    service: Service, alice: User
) -> None:
    async def conversation(session: ClientSession) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        fields = {
            "title": "Water the plants",
            "due_date": "2030-03-25T18:00:00+01:00",
            "recurrence": "FREQ=WEEKLY",
            "time_zone": "Europe/Berlin",
            "remind_at": "2030-03-25T17:30:00+01:00",
        }
        added = answer(await session.call_tool("add_task", {"user_id": alice.id, **fields}))
        answer(await session.call_tool("complete_task", {"user_id": alice.id, "task_id": added["id"]}))
        return added, listed(await session.call_tool("list_tasks", {"user_id": alice.id, "status": "pending"}))

    added, pending = over_http(service, alice, conversation)
    assert (added["recurrence"], added["time_zone"]) == ("FREQ=WEEKLY", "Europe/Berlin")
    [following] = pending
    assert (following["due_date"], following["remind_at"]) == ("2030-04-01T16:00:00Z", "2030-04-01T15:30:00Z")
