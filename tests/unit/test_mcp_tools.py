"""MCP tools made from the contract, in process: which operations become tools, their arguments
and annotations, JSON Schema from OpenAPI 3.0, and a wrong marker refused naming its operation.
(Calling them, over HTTP and stdio, is tests/api/test_mcp.py's and tests/system/test_mcp_stdio.py's.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.mcp import CONTRACT_TOOLS
from todo_api.app import contract
from todo_api.mcp_tools import EXTENSION, NEXT_CURSOR, tools_from
from todo_api.settings import ConfigError

SPEC = contract()


def marked() -> dict[str, Any]:
    return copy.deepcopy(SPEC)


def test_each_marked_operation_is_one_tool_and_no_other_operation_is() -> None:
    tools = tools_from(SPEC)
    assert set(tools) == CONTRACT_TOOLS
    marked_operations = {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and EXTENSION in operation
    }
    assert {(tool.method, tool.path) for tool in tools.values()} == marked_operations


def test_arguments_come_from_parameters_and_body_fields_but_never_from_headers() -> None:
    tools = tools_from(SPEC)
    add = tools["add_task"].definition.inputSchema
    assert {"user_id", "title", "description", "priority", "tags", "due_date"} <= set(add["properties"])
    assert set(add["required"]) == {"user_id", "title"}
    assert add["additionalProperties"] is False
    for tool in tools.values():
        assert not {"If-Match", "Idempotency-Key", "Authorization"} & set(tool.definition.inputSchema["properties"])
    assert tools["add_task"].idempotency_header == "Idempotency-Key"  # each call sends its own key


def test_annotations_follow_the_method() -> None:
    tools = {name: tool.definition.annotations for name, tool in tools_from(SPEC).items()}
    assert tools["list_tasks"] is not None and tools["list_tasks"].readOnlyHint is True
    assert tools["delete_task"] is not None and tools["delete_task"].destructiveHint is True
    assert tools["add_task"] is not None and tools["add_task"].readOnlyHint is False
    assert tools["add_task"].destructiveHint is False


def test_a_list_is_a_page_that_says_how_to_get_the_next() -> None:
    listing = tools_from(SPEC)["list_tasks"]
    assert listing.page_key == "tasks"
    output = listing.definition.outputSchema
    assert output is not None and set(output["required"]) == {"tasks", NEXT_CURSOR, "more"}
    assert NEXT_CURSOR in listing.definition.inputSchema["properties"]["cursor"]["description"]


def test_openapi_only_keywords_go_and_nullable_becomes_a_null_type() -> None:
    due = tools_from(SPEC)["add_task"].definition.inputSchema["properties"]["due_date"]
    assert "null" in due["type"]
    assert "nullable" not in due and not any(key.startswith("x-") for key in due)


@pytest.mark.parametrize(
    ("marker", "says"),
    [
        ({"rename": {"task": "task_id"}}, "the operation has no parameter or body field 'task'"),
        ({"omit": ["nothing_like_this"]}, "the operation has no parameter or body field 'nothing_like_this'"),
        ({"name": 3}, "give the tool's name"),
    ],
)
def test_a_wrong_marker_is_a_configuration_error_naming_the_operation(marker: dict[str, Any], says: str) -> None:
    spec = marked()
    operation = spec["paths"]["/api/{user_id}/tasks/{id}"]["delete"]
    operation[EXTENSION] = {**operation[EXTENSION], **marker}
    with pytest.raises(ConfigError, match=f"{EXTENSION} of {operation['operationId']}: {says}"):
        tools_from(spec)


def test_two_operations_may_not_share_a_tool_name() -> None:
    spec = marked()
    spec["paths"]["/api/{user_id}/tasks/{id}"]["delete"][EXTENSION] = "add_task"
    with pytest.raises(ConfigError, match="two operations are named 'add_task'"):
        tools_from(spec)
