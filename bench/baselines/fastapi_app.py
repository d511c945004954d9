"""Baseline (a): the workload's routes as a good FastAPI + SQLModel team would write them.

Async SQLModel sessions over asyncpg, PyJWT behind an `HTTPBearer` dependency, pydantic models
with `extra="forbid"`, `response_model`s that FastAPI serialises straight to JSON bytes, and
keyset pagination with a signed cursor in `Link`. Served by uvicorn exactly like todo-api.

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench_fastapi \
    BETTER_AUTH_SECRET=... uvicorn bench.baselines.fastapi_app:app --workers 2
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, ConfigDict, StringConstraints, computed_field
from sqlalchemy import BigInteger, Column, DateTime, Identity, Text, tuple_
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

SECRET = os.environ["BETTER_AUTH_SECRET"]
DATABASE_URL = os.environ["DATABASE_URL"]
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "10"))

engine = create_async_engine(DATABASE_URL, pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
SessionLocal = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


def _dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    return [tag for tag in tags if not (tag.casefold() in seen or seen.add(tag.casefold()))]


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Tags = Annotated[list[Tag], AfterValidator(_dedupe)]


# --- tables ---------------------------------------------------------------------------------


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True)
    email: str | None = None
    name: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    user_id: str = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True))
    title: str
    description: str | None = None
    completed: bool = False
    priority: Priority = Field(default=Priority.medium, sa_type=SAEnum(Priority, name="task_priority"))
    tags: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(Text), nullable=False))
    due_date: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    recurrence: str | None = None
    time_zone: str = "UTC"
    remind_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


# --- API models -----------------------------------------------------------------------------


class TaskCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: str | None = Field(default=None, max_length=5000)
    completed: bool = False
    priority: Priority = Priority.medium
    tags: Tags = Field(default_factory=list, max_length=10)
    due_date: datetime | None = None


class TaskUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: str | None = Field(default=None, max_length=5000)
    completed: bool | None = None
    priority: Priority | None = None
    tags: Tags | None = Field(default=None, max_length=10)
    due_date: datetime | None = None


class TaskCompletion(SQLModel):
    model_config = ConfigDict(extra="forbid")

    completed: bool | None = None


class TaskPublic(SQLModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    priority: Priority
    tags: list[str]
    due_date: datetime | None
    recurrence: str | None
    time_zone: str
    remind_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @computed_field
    @property
    def status(self) -> str:
        return "complete" if self.completed else "incomplete"


# --- dependencies ---------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


async def current_user(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated", {"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", {"WWW-Authenticate": "Bearer"}) from None
    return claims


SessionDep = Annotated[AsyncSession, Depends(get_session)]
UserDep = Annotated[dict, Depends(current_user)]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(title="tasks (FastAPI + SQLModel baseline)", lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


# --- cursors --------------------------------------------------------------------------------


def encode_cursor(user_id: str, task: Task) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([task.created_at.isoformat(), task.id]).encode()).decode()
    signature = hmac.new(SECRET.encode(), f"{user_id}.{payload}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{signature}"


def decode_cursor(user_id: str, cursor: str) -> tuple[datetime, int]:
    payload, _, signature = cursor.partition(".")
    expected = hmac.new(SECRET.encode(), f"{user_id}.{payload}".encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(signature, expected):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "bad cursor")
    created_at, task_id = json.loads(base64.urlsafe_b64decode(payload))
    return datetime.fromisoformat(created_at), task_id


# --- routes ---------------------------------------------------------------------------------


async def _owned(session: AsyncSession, user_id: str, task_id: int) -> Task:
    task = await session.get(Task, (user_id, task_id))
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "task not found")
    return task


@app.get("/api/tasks", response_model=list[TaskPublic])
async def list_tasks(
    request: Request,
    response: Response,
    session: SessionDep,
    user: UserDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> list[Task]:
    query = select(Task).where(Task.user_id == user["sub"])
    if cursor:
        query = query.where(tuple_(Task.created_at, Task.id) < tuple_(*decode_cursor(user["sub"], cursor)))
    query = query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    tasks = list((await session.exec(query)).all())
    if len(tasks) > limit:
        tasks = tasks[:limit]
        next_url = request.url.include_query_params(cursor=encode_cursor(user["sub"], tasks[-1]))
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return tasks


@app.post("/api/tasks", response_model=TaskPublic, status_code=status.HTTP_201_CREATED)
async def create_task(body: TaskCreate, response: Response, session: SessionDep, user: UserDep) -> Task:
    await session.exec(
        pg_insert(User).values(id=user["sub"], email=user.get("email"), name=user.get("name")).on_conflict_do_nothing()
    )
    task = Task.model_validate(body, update={"user_id": user["sub"]})
    session.add(task)
    await session.commit()
    response.headers["Location"] = f"/api/tasks/{task.id}"
    response.headers["ETag"] = f'"v{task.version}"'
    return task


@app.get("/api/tasks/{task_id}", response_model=TaskPublic)
async def get_task(task_id: int, response: Response, session: SessionDep, user: UserDep) -> Task:
    task = await _owned(session, user["sub"], task_id)
    response.headers["ETag"] = f'"v{task.version}"'
    return task


@app.patch("/api/tasks/{task_id}", response_model=TaskPublic)
async def update_task(task_id: int, body: TaskUpdate, response: Response, session: SessionDep, user: UserDep) -> Task:
    task = await _owned(session, user["sub"], task_id)
    task.sqlmodel_update(body.model_dump(exclude_unset=True))
    task.version += 1
    task.updated_at = utcnow()
    session.add(task)
    await session.commit()
    response.headers["ETag"] = f'"v{task.version}"'
    return task


@app.patch("/api/tasks/{task_id}/complete", response_model=TaskPublic)
async def complete_task(
    task_id: int,
    response: Response,
    session: SessionDep,
    user: UserDep,
    body: Annotated[TaskCompletion | None, Body()] = None,
) -> Task:
    task = await _owned(session, user["sub"], task_id)
    task.completed = body.completed if body and body.completed is not None else not task.completed
    task.version += 1
    task.updated_at = utcnow()
    session.add(task)
    await session.commit()
    response.headers["ETag"] = f'"v{task.version}"'
    return task
