"""`todo-api serve` as a subprocess, exactly as in production, and the databases it is given."""

from __future__ import annotations

import http.client
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import ROOT, pooler, processes
from tests.support.tokens import SECRET


class Service(processes.LoggedProcess):
    """A running `todo-api serve` process (`--no-migrate` unless `migrate`), answering /health once
    built unless `wait` is False."""

    def __init__(self, env: dict[str, str], *extra_args: str, migrate: bool = False, wait: bool = True) -> None:
        self.port = processes.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        no_migrate = [] if migrate else ["--no-migrate"]
        super().__init__(
            [sys.executable, "-m", "todo_api.cli", "serve", *no_migrate, "--port", str(self.port), *extra_args],
            log_prefix="todo-api-serve-",
            env=env,
            cwd=ROOT,
        )
        if wait:
            try:
                self.wait_until_answering("/health")
            except RuntimeError:
                self.stop()  # a service too slow to come up is not left running
                raise

    def wait_until_answering(self, path: str, timeout: float = 30) -> None:
        """Until GET `path` is a 200; a RuntimeError with the log if the process exits or `timeout` passes."""
        probe = processes.answers(self.base_url + path)
        processes.wait_until_up(self.process, probe, name="todo-api serve", log=self.output, timeout=timeout)


def raw_get(service: Service, target: str, headers: dict[str, str], timeout: float = 10) -> httpx.Response:
    """GET `target` sent with http.client, for what httpx refuses to send: a URL over 64 KB, a header
    value ending in white space."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        raw = connection.getresponse()
        return httpx.Response(raw.status, headers=raw.getheaders(), content=raw.read())
    finally:
        connection.close()


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "BETTER_AUTH_", "CORS_", "MAX_BODY"))
    }
    env.update(DATABASE_URL=pooler.serving_url(database_url), BETTER_AUTH_SECRET=SECRET, LOG_LEVEL="WARNING")
    env.update(overrides)
    return env


@contextmanager
def services_on(database_url: str) -> Iterator[Callable[..., Service]]:
    """Start services on the session database with extra environment, all stopped on leaving: each
    holds database connections and polls, so none outlives the scope that asked for it."""
    started: list[Service] = []

    def start(*args: str, **env: str) -> Service:
        service = Service(service_env(database_url, **env), *args)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@contextmanager
def running(env: dict[str, str]) -> Iterator[Service]:
    service = Service(env)
    try:
        yield service
    finally:
        service.stop()


@contextmanager
def fresh_database(server: Engine) -> Iterator[str]:
    """The URL of a new, empty database on `server`'s PostgreSQL, dropped afterwards."""
    name = f"todo_api_{uuid.uuid4().hex[:12]}"
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
