"""`todo-api mcp`: the MCP tools over stdio, as a desktop assistant starts them — a process of its
own for each test — with a token from the environment or from a command; and a contract whose
x-mcp-tool marker is wrong stops `todo-api check`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import yaml
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from tests.support import ROOT
from tests.support.mcp import CONTRACT_TOOLS, answer, listed, text_of
from tests.support.service import Service
from tests.support.tokens import SECRET, mint
from tests.support.users import User


def test_a_wrong_marker_stops_the_start_with_one_line_naming_the_operation(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    spec["paths"]["/api/{user_id}/tasks/{id}"]["delete"]["x-mcp-tool"]["rename"] = {"task": "task_id"}
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
            tasks = listed(await session.call_tool("list_tasks", {"user_id": alice.id, "status": "all"}))
            assert [task["id"] for task in tasks] == [added["id"]]
            foreign = await session.call_tool("list_tasks", {"user_id": bob.id})
            assert foreign.isError and text_of(foreign).startswith("403 ")
            assert f"This token belongs to user {alice.id!r}" in text_of(foreign)

    anyio.run(conversation)
    assert [task["title"] for task in alice.http.get("/api/tasks").json()] == ["From the desktop"]


TOKEN_COMMAND = """\
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
runs = folder / "runs"
done = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(done + 1))
print(json.loads((folder / "tokens.json").read_text())[done])
"""


def test_todo_api_mcp_runs_the_token_command_for_a_first_token_one_about_to_expire_and_one_refused(
    stdio_env: Callable[[User], dict[str, str]], alice: User, tmp_path: Path
) -> None:
    """As a desktop assistant keeps working past a token's life: TODO_API_TOKEN_COMMAND prints tokens in turn."""
    handed_out = [
        mint(alice.id, secret="another-secret-" + "y" * 40, ttl=3600),  # refused: run again, retry the call
        mint(alice.id, ttl=30),  # accepted, but within a minute of its expiry: the next call runs it again
        json.dumps({"token": mint(alice.id, ttl=3600)}),  # Better Auth's /api/auth/token answers this way
    ]
    (tmp_path / "tokens.json").write_text(json.dumps(handed_out))
    (tmp_path / "token.py").write_text(TOKEN_COMMAND)
    env = {key: value for key, value in stdio_env(alice).items() if key != "TODO_API_TOKEN"}
    env["TODO_API_TOKEN_COMMAND"] = f"{shlex.quote(sys.executable)} {tmp_path / 'token.py'} {tmp_path}"
    command = StdioServerParameters(command=sys.executable, args=["-m", "todo_api.cli", "mcp"], env=env)

    def runs() -> int:
        return int((tmp_path / "runs").read_text()) if (tmp_path / "runs").exists() else 0

    async def conversation() -> list[int]:
        seen = []
        async with stdio_client(command) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            seen.append(runs())  # nothing called yet: nothing run
            for _ in range(3):
                listed(await session.call_tool("list_tasks", {"user_id": alice.id}))
                seen.append(runs())
        return seen

    assert anyio.run(conversation) == [0, 2, 3, 3]


def test_a_failing_token_command_is_a_tool_error_that_shows_none_of_its_output(
    stdio_env: Callable[[User], dict[str, str]], alice: User
) -> None:
    env = {key: value for key, value in stdio_env(alice).items() if key != "TODO_API_TOKEN"}
    env["TODO_API_TOKEN_COMMAND"] = "echo secret-session-cookie >&2; exit 3"
    command = StdioServerParameters(command=sys.executable, args=["-m", "todo_api.cli", "mcp"], env=env)

    async def conversation() -> types.CallToolResult:
        async with stdio_client(command) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("list_tasks", {"user_id": alice.id})

    refused = anyio.run(conversation)
    assert refused.isError
    assert text_of(refused) == "TODO_API_TOKEN_COMMAND failed with exit status 3"
