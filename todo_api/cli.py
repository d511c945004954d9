"""`todo-api serve | migrate | token | check | health | mcp`."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from todo_api import embedded
from todo_api.settings import ConfigError, Settings, load

DESCRIPTION = """\
The todo-api service: each signed-in user's tasks, over HTTP, in PostgreSQL.

With no DATABASE_URL it runs its own embedded PostgreSQL (data in %(data)s, or in
TODO_API_DATA_DIR) and a development secret, so `todo-api serve` works on a fresh machine; mint a
token with `todo-api token USER_ID`. See docs/operations.md for every environment variable.
"""

DEVELOPMENT_SECRET = "dev-secret"
CURSOR_SECRET = "cursor-secret"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="todo-api",
        description=DESCRIPTION % {"data": embedded.data_dir()},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_whole(0, 65535), help="port to listen on (default: $PORT, which platforms set, else 8000)"
    )
    serve.add_argument(
        "--workers", type=_whole(1, 64), default=1, help="worker processes, e.g. one per core (default 1)"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")

    migrate = commands.add_parser("migrate", help="upgrade (or downgrade) the schema to a revision")
    migrate.add_argument("revision", nargs="?", default="head", help="target revision (default: head; base: empty)")
    migrate.add_argument(
        "--yes", action="store_true", help="downgrade even if that deletes tables or columns holding rows"
    )

    token = commands.add_parser("token", help="mint a development HS256 token signed with BETTER_AUTH_SECRET")
    token.add_argument("user_id", metavar="USER_ID", type=_subject, help="the token's subject")
    token.add_argument("--email", help="email claim, copied into the user's row on first write")
    token.add_argument(
        "--ttl", type=_whole(1, 10 * 365 * 86400), default=3600, help="lifetime in seconds (default 3600)"
    )

    commands.add_parser("check", help="validate openapi.yaml and the configuration, then exit")

    commands.add_parser(
        "health",
        help="exit 0 when the service on this machine's $PORT (else 8000) answers GET /health: a container's probe",
    )

    commands.add_parser(
        "mcp",
        help="the MCP tools over stdio, for AI assistants: calls TODO_API_URL with TODO_API_TOKEN",
        description="Serve the contract's MCP tools over stdio (for desktop assistants that cannot send headers). "
        "Each call is a request to the running service at TODO_API_URL (default http://127.0.0.1:8000) "
        "with TODO_API_TOKEN as the bearer token, or with the token TODO_API_TOKEN_COMMAND prints, run "
        "again whenever the token is about to expire or is refused.",
    )

    args = parser.parse_args(argv)
    try:
        settings = load()
        commands_by_name = {
            "serve": _serve,
            "migrate": _migrate,
            "token": _token,
            "check": _check,
            "mcp": _mcp,
            "health": _health,
        }
        return commands_by_name[args.command](settings, args)
    except ConfigError as error:
        print(f"todo-api: configuration error: {error}", file=sys.stderr)
        return 2
    except MigrationError as error:
        print(f"todo-api: cannot migrate: {error}", file=sys.stderr)
        return 1
    except ListenError as error:
        print(f"todo-api: cannot listen on {error}", file=sys.stderr)
        return 1


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (the kernel would wrap port 70000)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high} (got {value})")
        return value

    return parse


def _subject(text: str) -> str:
    """An argparse type: a user id the service accepts as a token's subject (handlers/auth.py)."""
    from handlers.auth import MAX_SUBJECT_CHARS

    if not text.strip() or len(text) > MAX_SUBJECT_CHARS or "\x00" in text:
        raise argparse.ArgumentTypeError(
            f"must be 1 to {MAX_SUBJECT_CHARS} characters, not only white space (got {len(text)} characters)"
        )
    return text


class ListenError(Exception):
    """`serve` cannot listen on its address; the message is one line."""


def _refuse_a_taken_address(host: str, port: int) -> None:
    """Fail before starting anything, rather than as uvicorn's log line and exit status 3."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn binds
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as error:
        raise ListenError(f"{host}:{port}: {error.strerror or error} (--host, --port)") from None


class MigrationError(Exception):
    """The schema could not be brought to the revision asked for; the message is one line."""


def _apply_migrations(settings: Settings, revision: str = "head", *, discard_data: bool = False) -> str:
    """Migrate as the owner role (MIGRATION_DATABASE_URL, else DATABASE_URL); returns that URL."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from persistence import schema

    url = settings.migration_database_url or settings.database_url or ""
    try:
        schema.migrate(
            url, revision, lock_timeout_seconds=settings.migration_lock_timeout_seconds, discard_data=discard_data
        )
    except schema.MigrationRefused as error:
        raise MigrationError(str(error)) from None
    except DBAPIError as error:  # the driver's words name host and cause, never the password
        source = "MIGRATION_DATABASE_URL" if settings.migration_database_url else "DATABASE_URL"
        reason = " ".join(str(error.orig).split())
        raise MigrationError(f"{source}: {reason}") from None
    except CommandError as error:
        raise MigrationError(str(error)) from None
    return url


def _require_token_source(settings: Settings) -> None:
    """Only the embedded database may run on a generated development secret."""
    if settings.database_url is not None and not settings.verifies_tokens:
        raise ConfigError("BETTER_AUTH_SECRET (or BETTER_AUTH_URL / JWT_JWKS_URL) is required when DATABASE_URL is set")


def _database(settings: Settings) -> Settings:
    """`settings` with a database URL and a secret, starting the embedded server if none is set."""
    _require_token_source(settings)
    if settings.database_url is not None:
        return settings
    data = embedded.data_dir(settings.data_dir)
    started = time.monotonic()
    url = embedded.start(data / "pgdata")
    print(
        f"todo-api: embedded PostgreSQL in {data / 'pgdata'} ready in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    secret = settings.better_auth_secret
    if secret is None:
        secret = embedded.kept_secret(data / DEVELOPMENT_SECRET)
        print(
            f"todo-api: using the development secret in {data / DEVELOPMENT_SECRET}; "
            "`todo-api token USER_ID` mints tokens",
            file=sys.stderr,
        )
    return dataclasses.replace(settings, database_url=url, better_auth_secret=secret)


def worker_app() -> Any:
    """One worker's application (uvicorn's factory). Frozen once built: the collector's full
    passes then skip the contract's and libraries' ~125 000 long-lived objects, which turned each
    into a 90 ms stall of every request in flight (bench/PROFILE.md)."""
    from todo_api.app import create_app

    app = create_app()
    gc.freeze()
    return app


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from todo_api.transport import BoundedHttpToolsProtocol

    port = settings.port if args.port is None else args.port
    _refuse_a_taken_address(args.host, port)
    settings = _database(settings)
    if not args.no_migrate:
        _apply_migrations(settings)
    # Workers are separate processes that read their settings from the environment.
    os.environ["DATABASE_URL"] = settings.database_url or ""
    if settings.better_auth_secret:
        os.environ["BETTER_AUTH_SECRET"] = settings.better_auth_secret
    if settings.cursor_secret is None and settings.better_auth_secret is None:
        os.environ["CURSOR_SECRET"] = _kept_cursor_secret(settings)
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers add their metrics up through files here.
        metrics_dir = tempfile.mkdtemp(prefix="todo-api-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Uvicorn drains requests on SIGTERM, then re-raises it; exiting normally then lets atexit
    # stop an embedded PostgreSQL instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "todo_api.cli:worker_app",
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        http=BoundedHttpToolsProtocol,
        access_log=False,  # todo_api.observability writes one JSON line per request
    )
    return 0


def _kept_cursor_secret(settings: Settings) -> str:
    """With only a JWKS source, cursors are signed with a random secret kept in the data directory."""
    path = embedded.data_dir(settings.data_dir) / CURSOR_SECRET
    try:
        return embedded.kept_secret(path)
    except OSError as error:
        raise ConfigError(
            f"CURSOR_SECRET is required: cannot keep a generated one in {path} ({error.strerror})"
        ) from None


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from persistence import schema

    # A migration job is given a URL and nothing else: no token source, no embedded server.
    given = settings.migration_database_url or settings.database_url
    url = _apply_migrations(settings if given else _database(settings), args.revision, discard_data=args.yes)
    print(f"todo-api: schema at {schema.current(url) or 'base'}")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    import jwt

    secret = settings.better_auth_secret
    if secret is None and settings.database_url is None:
        secret = embedded.kept_secret(embedded.data_dir(settings.data_dir) / DEVELOPMENT_SECRET)
    if secret is None:
        raise ConfigError("BETTER_AUTH_SECRET is required to mint a token")
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.user_id, "iat": now, "exp": now + args.ttl}
    if args.email:
        claims["email"] = args.email
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    from todo_api.app import CONTRACT, create_app

    _require_token_source(settings)
    spec, _ = read_from_filename(str(CONTRACT))
    validate(spec)
    # Building the app resolves every operationId to its handler without touching the database.
    create_app(
        dataclasses.replace(
            settings,
            database_url=settings.database_url or "postgresql+psycopg://unused",
            better_auth_secret=settings.better_auth_secret or "x" * 32,
        )
    )
    print(f"todo-api: {CONTRACT.name} is valid, every operation has a handler, and the configuration is valid")
    return 0


def _health(settings: Settings, _args: argparse.Namespace) -> int:
    import httpx

    url = f"http://127.0.0.1:{settings.port}/health"
    try:
        status = httpx.get(url, timeout=5).status_code
    except httpx.TransportError as error:
        print(f"todo-api: {url}: {type(error).__name__}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"todo-api: {url}: {status}", file=sys.stderr)
    return 0 if status == 200 else 1


def _mcp(settings: Settings, _args: argparse.Namespace) -> int:
    import anyio

    from todo_api import mcp_server
    from todo_api.app import CONTRACT, contract
    from todo_api.credentials import Credentials, FixedToken, TokenCommand

    credentials: Credentials
    if settings.api_token_command is not None:
        credentials = TokenCommand(settings.api_token_command, settings.api_token)
    elif settings.api_token is not None:
        credentials = FixedToken(settings.api_token)
    else:
        raise ConfigError(
            "TODO_API_TOKEN is required: the bearer token the tools send (`todo-api token USER_ID`), "
            "or TODO_API_TOKEN_COMMAND, a command that prints a fresh one"
        )
    spec = contract(settings.openapi_file or CONTRACT)
    anyio.run(mcp_server.serve_stdio, spec, settings.api_url, credentials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
