"""What an MCP message must be before the SDK reads it, over HTTP and stdio alike: UTF-8 JSON, not
nested deeper than a tool's arguments need, its strings Unicode text, its numbers within int64, a
JSON-RPC 2.0 message of a method MCP defines with params of the right shape. A message that is not
gets a JSON-RPC error of the right code naming what is wrong — never a parser's or pydantic's
words, and always a reply to its id when it has one.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import pydantic
from mcp import types

MAX_DEPTH = 32  # a tool's arguments are a few levels deep; the SDK's parser gives up far deeper
MAX_DIGITS = 19  # int64, the widest number a tool takes (a task id)
MAX_ID_CHARS = 256  # a request id echoed in a reply
# Every request a client may send, by method.
_REQUESTS: dict[str, type[pydantic.BaseModel]] = {
    member.model_fields["method"].annotation.__args__[0]: member
    for member in typing.get_args(types.ClientRequest.model_fields["root"].annotation)
}


class Refused(Exception):
    """The message is refused with a JSON-RPC error (to its id, when it has one)."""

    def __init__(self, code: int, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    def reply(self) -> str:
        """The JSON-RPC error, with `"id": null` where the message had no id we could read."""
        error = {"code": self.code, "message": str(self)}
        return json.dumps({"jsonrpc": "2.0", "id": self.request_id, "error": error}, ensure_ascii=False)


def check(text: str) -> None:
    """Refused unless `text` is a message the SDK can read and answer."""
    too_long: list[_TooLong] = []

    def whole_number(digits: str) -> int | _TooLong:
        if len(digits.lstrip("-")) > MAX_DIGITS:
            too_long.append(_TooLong())
            return too_long[-1]
        return int(digits)

    try:
        message = json.loads(text, parse_int=whole_number, parse_constant=_not_json)
    except RecursionError:
        try:
            request_id = _top_level_id(text)
        except ValueError:
            request_id = None
        raise Refused(types.INVALID_REQUEST, "Invalid request: nested too deeply", request_id) from None
    except ValueError:
        raise Refused(types.PARSE_ERROR, "Parse error: the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise Refused(types.INVALID_REQUEST, "Invalid request: send one JSON-RPC 2.0 message, an object")
    request_id = message.get("id")
    if isinstance(request_id, _TooLong):
        raise Refused(types.INVALID_REQUEST, f"Invalid request: the id has more than {MAX_DIGITS} digits")
    request_id = _echoable(request_id)
    if _depth(message) > MAX_DEPTH:
        raise Refused(types.INVALID_REQUEST, f"Invalid request: nested deeper than {MAX_DEPTH} levels", request_id)
    if too_long:
        raise Refused(types.INVALID_PARAMS, f"Invalid params: a number has more than {MAX_DIGITS} digits", request_id)
    if not _unicode(message):
        raise Refused(types.INVALID_PARAMS, "Invalid params: a string has a lone surrogate", request_id)
    try:
        parsed = types.JSONRPCMessage.model_validate(message).root
    except pydantic.ValidationError:
        raise Refused(types.INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 message", request_id) from None
    if not isinstance(parsed, types.JSONRPCRequest):
        return
    if parsed.method not in _REQUESTS:
        raise Refused(types.METHOD_NOT_FOUND, f"Method not found: {parsed.method[:64]!r}", request_id)
    try:
        _REQUESTS[parsed.method].model_validate({"method": parsed.method, "params": parsed.params})
    except pydantic.ValidationError as error:
        fields = sorted({".".join(map(str, problem["loc"][1:])) or "params" for problem in error.errors()})
        where = ", ".join(field[:64] for field in fields[:5])
        raise Refused(types.INVALID_PARAMS, f"Invalid params of {parsed.method}: {where}", request_id) from None


class _TooLong:
    """Where the message has a number of more than MAX_DIGITS digits (int() refuses over 4 300)."""


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _echoable(request_id: Any) -> str | int | None:
    """`request_id` if a reply can carry it; else None: the reply goes to no id, as JSON-RPC says."""
    if (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS) or type(request_id) is int:
        return request_id
    return None


def _top_level_id(text: str) -> str | int | None:
    """The `id` member of the object `text` opens, found without parsing what is nested in it
    (Python's parser gives up on deep nesting); None when there is none, or it is not an id.
    ValueError where a string in it is not JSON."""
    decoder = json.JSONDecoder()
    depth, index, expecting_key = 0, 0, False
    while index < len(text):
        char = text[index]
        if char == '"':
            value, end = decoder.raw_decode(text, index)  # a string: its closing quote is found
            rest = text[end:].lstrip()
            if depth == 1 and expecting_key and value == "id" and rest.startswith(":"):
                found, _ = decoder.raw_decode(text, len(text) - len(rest[1:].lstrip()))
                return _echoable(found)
            expecting_key, index = False, end
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        expecting_key = (depth == 1 and char in "{,") or (expecting_key and char.isspace())
        index += 1
    return None


def _depth(value: Any) -> int:
    """How deeply `value` nests, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return deepest


def _unicode(value: Any) -> bool:
    """Whether every string and key in `value` is text UTF-8 can carry (no lone surrogate)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
