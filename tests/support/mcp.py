"""A real MCP client (the official SDK) on a service's /mcp."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any

import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from tests.support import TLS

# The operations openapi.yaml marks with x-mcp-tool.
CONTRACT_TOOLS = {"add_task", "list_tasks", "get_task", "complete_task", "delete_task", "update_task"}


@asynccontextmanager
async def connected(base_url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30, verify=TLS) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def answer(result: types.CallToolResult) -> Any:
    """The structured result, which its text block repeats."""
    assert not result.isError, result.content
    assert json.loads(text_of(result)) == result.structuredContent
    return result.structuredContent


def text_of(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def listed(result: types.CallToolResult) -> list[dict[str, Any]]:
    """The tasks of a list_tasks result that says no more exist."""
    page = answer(result)
    assert (page["more"], page["next_cursor"]) == (False, None), page
    tasks: list[dict[str, Any]] = page["tasks"]
    return tasks
