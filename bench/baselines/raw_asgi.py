"""Baseline (b): the practical ceiling — a bare ASGI callable serving only the workload's routes.

No framework, no ORM: hand-written routing, a few lines of body checks, PyJWT for the token
(still verified on every request), one SQL statement per request in autocommit, orjson out.
`BENCH_RAW_DRIVER=asyncpg` (default; its prepared-statement cache is on) or `psycopg`
(autocommit, no server-side prepared statements — what todo-api must do behind PgBouncer),
which isolates the driver's share of the gap.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_raw BETTER_AUTH_SECRET=... \
    uvicorn bench.baselines.raw_asgi:app --workers 2
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
import orjson

SECRET = os.environ["BETTER_AUTH_SECRET"]
DATABASE_URL = os.environ["DATABASE_URL"]
DRIVER = os.environ.get("BENCH_RAW_DRIVER", "asyncpg")
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "10"))

COLUMNS = (
    "id, user_id, title, description, completed, priority::text AS priority, tags, due_date, recurrence,"
    " time_zone, remind_at, version, created_at, updated_at"
)
LIST_FIRST = f"SELECT {COLUMNS} FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
LIST_AFTER = (
    f"SELECT {COLUMNS} FROM tasks WHERE user_id = $1 AND (created_at, id) < ($2, $3)"
    " ORDER BY created_at DESC, id DESC LIMIT $4"
)
GET = f"SELECT {COLUMNS} FROM tasks WHERE user_id = $1 AND id = $2"
CREATE = (
    "WITH owner AS (INSERT INTO users (id, email, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING)"
    " INSERT INTO tasks (user_id, title, description, completed, priority, tags, due_date)"
    f" VALUES ($1, $4, $5, $6, $7::task_priority, $8, $9) RETURNING {COLUMNS}"
)
TOGGLE = (
    "UPDATE tasks SET completed = NOT completed, version = version + 1, updated_at = clock_timestamp()"
    f" WHERE user_id = $1 AND id = $2 RETURNING {COLUMNS}"
)
PRIORITIES = {"low", "medium", "high", "urgent"}
WRITABLE = {"title", "description", "completed", "priority", "tags", "due_date"}
TASK_PATH = re.compile(r"^/api/tasks/([1-9][0-9]{0,18})(/complete)?$")


class Problem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


# --- database -------------------------------------------------------------------------------


class Database:
    async def open(self) -> None:
        if DRIVER == "asyncpg":
            import asyncpg

            self._pool = await asyncpg.create_pool(DATABASE_URL, min_size=POOL_SIZE, max_size=2 * POOL_SIZE)
        else:
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            kwargs = {"autocommit": True, "prepare_threshold": None, "row_factory": dict_row}
            self._pool = AsyncConnectionPool(
                DATABASE_URL, min_size=POOL_SIZE, max_size=2 * POOL_SIZE, kwargs=kwargs, open=False
            )
            await self._pool.open()
            self._sql: dict[str, str] = {}

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if DRIVER == "asyncpg":
            return [dict(row) for row in await self._pool.fetch(sql, *args)]
        query = self._sql.get(sql)
        if query is None:
            # $n → %s; each $n below is used in order, $1 possibly twice.
            numbers = [int(n) for n in re.findall(r"\$(\d+)", sql)]
            query = self._sql[sql] = re.sub(r"\$\d+", "%s", sql), numbers
        text, numbers = query
        async with self._pool.connection() as connection:
            cursor = await connection.execute(text, [args[n - 1] for n in numbers])
            return await cursor.fetchall()


db = Database()


# --- HTTP -----------------------------------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await db.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    try:
        status, payload, headers = await _route(scope, receive)
    except Problem as problem:
        status, payload, headers = problem.status, {"status": problem.status, "detail": problem.detail}, []
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
    body = orjson.dumps(payload, option=orjson.OPT_UTC_Z)
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _route(scope: dict[str, Any], receive: Any) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    path, method = scope["path"], scope["method"]
    if path == "/health":
        return 200, {"status": "ok"}, []
    if path == "/api/tasks":
        user = _caller(scope)
        if method == "GET":
            return await _list(scope, user)
        if method == "POST":
            return await _create(user, _object(await _body(receive)))
        raise Problem(405, "method not allowed")
    match = TASK_PATH.match(path)
    if match is None:
        raise Problem(404, "not found")
    user = _caller(scope)
    task_id = int(match[1])
    if match[2]:
        if method != "PATCH":
            raise Problem(405, "method not allowed")
        raw = await _body(receive)
        changes = _object(raw) if raw.strip() else {}
        if set(changes) - {"completed"} or not isinstance(changes.get("completed", False), bool):
            raise Problem(422, "only `completed` (a boolean) may be given")
        if "completed" in changes:
            return await _update(user["sub"], task_id, changes)
        return _one(await db.fetch(TOGGLE, user["sub"], task_id), task_id)
    if method == "GET":
        return _one(await db.fetch(GET, user["sub"], task_id), task_id)
    if method == "PATCH":
        changes = _writable(_object(await _body(receive)), partial=True)
        if not changes:
            raise Problem(422, "give at least one field")
        return await _update(user["sub"], task_id, changes)
    raise Problem(405, "method not allowed")


def _caller(scope: dict[str, Any]) -> dict[str, Any]:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                break
            try:
                claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
            except jwt.InvalidTokenError:
                raise Problem(401, "invalid token") from None
            if not isinstance(claims.get("sub"), str) or not claims["sub"]:
                raise Problem(401, "no subject")
            return claims
    raise Problem(401, "missing bearer token")


async def _body(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
        if sum(map(len, chunks)) > 65536:
            raise Problem(413, "body too large")
    return b"".join(chunks)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(400, "malformed JSON") from None
    if not isinstance(value, dict):
        raise Problem(422, "the body must be a JSON object")
    return value


def _writable(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The body as column values, or 422."""
    if set(body) - WRITABLE:
        raise Problem(422, "unknown fields: " + ", ".join(sorted(set(body) - WRITABLE)))
    fields: dict[str, Any] = {}
    if "title" in body or not partial:
        title = body.get("title")
        if not isinstance(title, str) or not 1 <= len(title.strip()) <= 255 or "\x00" in title:
            raise Problem(422, "title must be 1–255 characters")
        fields["title"] = title.strip()
    if "description" in body:
        description = body["description"]
        if description is not None and (not isinstance(description, str) or len(description) > 5000):
            raise Problem(422, "description must be at most 5000 characters")
        fields["description"] = description
    if "completed" in body:
        if not isinstance(body["completed"], bool):
            raise Problem(422, "completed must be a boolean")
        fields["completed"] = body["completed"]
    if "priority" in body:
        if body["priority"] not in PRIORITIES:
            raise Problem(422, "priority must be low, medium, high or urgent")
        fields["priority"] = body["priority"]
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or len(tags) > 10:
            raise Problem(422, "tags must be a list of at most 10")
        seen: set[str] = set()
        fields["tags"] = []
        for tag in tags:
            if not isinstance(tag, str) or not 1 <= len(tag.strip()) <= 32:
                raise Problem(422, "each tag must be 1–32 characters")
            if tag.strip().casefold() not in seen:
                seen.add(tag.strip().casefold())
                fields["tags"].append(tag.strip())
    if "due_date" in body:
        due = body["due_date"]
        try:
            fields["due_date"] = None if due is None else datetime.fromisoformat(due)
        except (TypeError, ValueError):
            raise Problem(422, "due_date must be an RFC 3339 date-time") from None
    return fields


async def _list(scope: dict[str, Any], user: dict[str, Any]) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    try:
        limit = int(params.get("limit", 100))
    except ValueError:
        raise Problem(422, "limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise Problem(422, "limit must be 1–500")
    if params.get("cursor"):
        created_at, last_id = _decode_cursor(user["sub"], params["cursor"])
        rows = await db.fetch(LIST_AFTER, user["sub"], created_at, last_id, limit + 1)
    else:
        rows = await db.fetch(LIST_FIRST, user["sub"], limit + 1)
    headers = []
    if len(rows) > limit:
        rows = rows[:limit]
        params["cursor"] = _encode_cursor(user["sub"], rows[-1])
        host = next((value for name, value in scope["headers"] if name == b"host"), b"localhost").decode("latin-1")
        url = f"{scope['scheme']}://{host}{scope['path']}?{urlencode(params)}"
        headers.append((b"link", f'<{url}>; rel="next"'.encode()))
    return 200, [_task(row) for row in rows], headers


async def _create(user: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    fields = _writable(body, partial=False)
    rows = await db.fetch(
        CREATE,
        user["sub"],
        user.get("email"),
        user.get("name"),
        fields["title"],
        fields.get("description"),
        fields.get("completed", False),
        fields.get("priority", "medium"),
        fields.get("tags", []),
        fields.get("due_date"),
    )
    task = rows[0]
    return 201, _task(task), [(b"location", f"/api/tasks/{task['id']}".encode()), _etag(task)]


async def _update(user_id: str, task_id: int, changes: dict[str, Any]) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    names = sorted(changes)
    assignments = ", ".join(
        f"{name} = ${i}" + ("::task_priority" if name == "priority" else "") for i, name in enumerate(names, 3)
    )
    sql = (
        f"UPDATE tasks SET {assignments}, version = version + 1, updated_at = clock_timestamp()"
        f" WHERE user_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )
    return _one(await db.fetch(sql, user_id, task_id, *(changes[name] for name in names)), task_id)


def _one(rows: list[dict[str, Any]], task_id: int) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    if not rows:
        raise Problem(404, f"task {task_id} does not exist")
    return 200, _task(rows[0]), [_etag(rows[0])]


def _etag(row: dict[str, Any]) -> tuple[bytes, bytes]:
    return b"etag", f'"v{row["version"]}"'.encode()


def _task(row: dict[str, Any]) -> dict[str, Any]:
    task = dict(row)
    del task["version"]
    task["status"] = "complete" if row["completed"] else "incomplete"
    return task


def _encode_cursor(user_id: str, row: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps([row["created_at"].isoformat(), row["id"]])).decode()
    signature = hmac.new(SECRET.encode(), f"{user_id}.{payload}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{signature}"


def _decode_cursor(user_id: str, cursor: str) -> tuple[datetime, int]:
    payload, _, signature = cursor.partition(".")
    expected = hmac.new(SECRET.encode(), f"{user_id}.{payload}".encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(signature, expected):
        raise Problem(400, "bad cursor")
    try:
        created_at, last_id = orjson.loads(base64.urlsafe_b64decode(payload))
        return datetime.fromisoformat(created_at), int(last_id)
    except (ValueError, TypeError):
        raise Problem(400, "bad cursor") from None
