"""The command line and its configuration: `todo-api serve | migrate | token | check | health`, run as processes."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import Engine

from persistence import schema
from tests.support import ROOT
from tests.support.jwks import JWKS_PATH, JwksServer, SigningKey
from tests.support.processes import answers, free_port, stop, wait_until_up
from tests.support.service import Service, service_env
from tests.support.tokens import SECRET
from tests.support.users import User

_SCRIPT = Path(sys.executable).with_name("todo-api")
TODO_API = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "todo_api.cli"]
CONFIG_VARIABLES = (
    "DATABASE_URL",
    "BETTER_AUTH_SECRET",
    "BETTER_AUTH_URL",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_SECONDS",
    "CORS_ORIGINS",
    "MAX_BODY_BYTES",
    "LOG_LEVEL",
    "TODO_API_DATA_DIR",
    "CURSOR_SECRET",
    "CURSOR_SECRETS",
    "BETTER_AUTH_SECRETS",
    "METRICS_TOKEN",
    "MIGRATION_DATABASE_URL",
    "MIGRATION_LOCK_TIMEOUT_SECONDS",
    "PORT",
)
Env = Callable[..., dict[str, str]]


def todo_api(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TODO_API, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where the embedded database and development secret go, instead of /var/lib/todo-api."""
    return tmp_path / "data"


@pytest.fixture
def bare_env(data_dir: Path) -> Env:
    """The environment of a fresh machine: no configuration at all, plus `overrides`."""

    def fresh(**overrides: str) -> dict[str, str]:
        # No XDG_RUNTIME_DIR either, as under su, cron or a systemd service.
        base = {key: value for key, value in os.environ.items() if key not in {*CONFIG_VARIABLES, "XDG_RUNTIME_DIR"}}
        return {**base, "TODO_API_DATA_DIR": str(data_dir), **overrides}

    return fresh


@pytest.fixture
def env(bare_env: Env, database_url: str) -> Env:
    """A valid configuration for the session database, plus `overrides`."""

    def configured(**overrides: str) -> dict[str, str]:
        return bare_env(**{"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, **overrides})

    return configured


def assert_refused(result: subprocess.CompletedProcess[str], variable: str) -> str:
    """The command stopped with a non-zero status and exactly one clear line naming `variable`."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0], lines[0]
    return lines[0]


def refuse_to_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`todo-api serve`, which must stop on its own: still running after the timeout means it started."""
    try:
        return todo_api("serve", "--no-migrate", "--port", str(free_port()), env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("todo-api serve started instead of refusing its configuration")


@contextmanager
def serving(env: dict[str, str], *args: str, timeout: float = 120) -> Iterator[tuple[str, Path]]:
    """`todo-api serve *args` (migrating first, unlike the conftest service) until /health answers."""
    with serve_process(env, *args, timeout=timeout) as (process, base_url, log):
        try:
            yield base_url, log
        finally:
            stop(process, timeout=30)


@contextmanager
def serve_process(
    env: dict[str, str], *args: str, timeout: float = 120
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`todo-api serve *args` answering /health, for the test to end as it likes (killed if it did not)."""
    port = free_port()
    log = Path(env["TODO_API_DATA_DIR"]).parent / f"serve-{port}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*TODO_API, "serve", "--port", str(port), *args], env=env, cwd=ROOT, stdout=output, stderr=output
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, answers(base_url + "/health"), name="todo-api serve", log=log.read_text, timeout=timeout)
        yield process, base_url, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def spell(url: str, scheme: str, query: str = "") -> str:
    """`url` with another scheme and, optionally, more libpq parameters."""
    rest = url.split("://", 1)[1]
    if query:
        rest += ("&" if "?" in rest else "?") + query
    return f"{scheme}://{rest}"


def decode(token: str, secret: str = SECRET) -> dict[str, Any]:
    return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})


# --- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ([], ["serve", "migrate", "token", "check", "DATABASE_URL"]),
        (["serve"], ["--host", "--port", "--workers", "--no-migrate"]),
        (["migrate"], ["revision"]),
        (["token"], ["user_id", "--email", "--ttl"]),
        (["check"], []),
    ],
)
def test_help_of_every_command_is_readable(
    bare_env: Env, data_dir: Path, command: list[str], mentions: list[str]
) -> None:
    result = todo_api(*command, "--help", env=bare_env(), timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: todo-api {' '.join(command)}".rstrip())
    assert result.stderr == ""
    for word in mentions:
        assert word.lower() in result.stdout.lower(), word
    assert not data_dir.exists(), "asking for help must not create a database"


def test_no_command_prints_usage_and_fails(bare_env: Env) -> None:
    result = todo_api(env=bare_env(), timeout=30)
    assert result.returncode != 0
    assert "usage: todo-api" in result.stderr
    assert "Traceback" not in result.stderr


# --- token -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [90, 86_400])
def test_token_mints_a_token_the_service_accepts(service: Service, env: Env, db: Engine, ttl: int) -> None:
    user_id = f"cli-{uuid.uuid4().hex[:12]}"
    before = int(time.time())
    result = todo_api("token", user_id, "--email", f"{user_id}@example.com", "--ttl", str(ttl), env=env())
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1, "stdout is the token alone, for $(todo-api token …)"
    token = result.stdout.strip()

    claims = decode(token)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["sub"] == user_id and claims["email"] == f"{user_id}@example.com"
    assert before + ttl <= claims["exp"] <= after + ttl
    assert claims["exp"] - claims["iat"] == ttl

    with httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        created = client.post("/api/tasks", json={"title": "minted on the command line"})
        assert created.status_code == 201, created.text
        assert created.json()["user_id"] == user_id
        assert [task["id"] for task in client.get("/api/tasks").json()] == [created.json()["id"]]
    with db.connect() as connection:
        email = connection.scalar(text("SELECT email FROM users WHERE id = :id"), {"id": user_id})
    assert email == f"{user_id}@example.com"


def test_token_with_a_configured_issuer_and_audience_is_accepted_by_that_service(
    start_service: Callable[..., Service], env: Env
) -> None:
    config = {"JWT_ISSUER": "https://auth.example", "JWT_AUDIENCE": "https://api.example"}
    checked = start_service(**config)
    result = todo_api("token", "cli-issued", env=env(**config))
    assert result.returncode == 0, result.stderr
    response = httpx.get(checked.base_url + "/api/tasks", headers={"Authorization": f"Bearer {result.stdout.strip()}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("ttl", ["soon", "1.5", "0", "-60"])
def test_token_rejects_a_ttl_that_is_not_a_positive_whole_number_of_seconds(env: Env, ttl: str) -> None:
    result = todo_api("token", "someone", "--ttl", ttl, env=env())
    assert result.returncode != 0
    assert result.stdout == ""
    assert "--ttl" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--port", "70000"), ("--port", "-1"), ("--port", "http"), ("--workers", "0"), ("--workers", "two")],
)
def test_serve_refuses_a_port_or_worker_count_out_of_range(env: Env, option: str, value: str) -> None:
    result = todo_api("serve", "--no-migrate", option, value, env=env(), timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"argument {option}: must be" in result.stderr and "Traceback" not in result.stderr


def test_token_without_a_secret_uses_the_development_secret_kept_beside_the_embedded_data(
    bare_env: Env, data_dir: Path
) -> None:
    first = todo_api("token", "dev-user", env=bare_env())
    assert first.returncode == 0, first.stderr
    secret_files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert len(secret_files) == 1, secret_files
    assert stat.S_IMODE(secret_files[0].stat().st_mode) & 0o077 == 0, "the secret is readable by others"
    secret = secret_files[0].read_text().strip()
    assert len(secret.encode()) >= 32
    assert decode(first.stdout.strip(), secret)["sub"] == "dev-user"

    second = todo_api("token", "dev-user", env=bare_env())
    assert second.returncode == 0, second.stderr
    assert decode(second.stdout.strip(), secret)["sub"] == "dev-user", "the secret is generated once"


# --- check -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="session-database"),
        pytest.param({"BETTER_AUTH_SECRET": "Zp4rT8vX2mQ6wN9cL3bK7hF5jD1sG0aY"}, id="secret-of-exactly-32-bytes"),
        pytest.param({"BETTER_AUTH_SECRET": "é7Ùq§ÈwZ¿Ñ4ø×Ä9Þk2Lmé"}, id="secret-of-32-bytes-in-21-characters"),
        pytest.param({"CURSOR_SECRET": "Zp4rT8vX2mQ6wN9cL3bK7hF5jD1sG0aY"}, id="cursor-secret"),
        pytest.param(
            {
                "JWT_LEEWAY_SECONDS": "0",
                "MAX_BODY_BYTES": "1048576",
                "CORS_ORIGINS": "https://app.example.com, http://localhost:3000",
                "LOG_LEVEL": "debug",
                "JWT_ISSUER": "https://auth.example",
                "JWT_AUDIENCE": "https://api.example",
                "BETTER_AUTH_URL": "https://auth.example",
            },
            id="every-variable-set",
        ),
    ],
)
def test_check_accepts_a_valid_configuration(env: Env, overrides: dict[str, str]) -> None:
    result = todo_api("check", env=env(**overrides))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_check_needs_no_configuration_on_first_run(bare_env: Env) -> None:
    result = todo_api("check", env=bare_env())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "secret",
    [" " * 40, "s" * 32, "0123456789abcdef" * 2, "abcdefghijklmnopqrstuvwxyz0123456789"],
    ids=["white-space", "one-character", "a-sequence-repeated", "a-sequence"],
)
def test_check_refuses_a_weak_secret_even_on_first_run(bare_env: Env, secret: str) -> None:
    """Without DATABASE_URL a blank secret is not silently replaced by the development secret."""
    assert_refused(todo_api("check", env=bare_env(BETTER_AUTH_SECRET=secret)), "BETTER_AUTH_SECRET")


@pytest.mark.parametrize("secret", ["0123456789abcdef" * 2, "correcthorsebatterystaple1234567"])
def test_the_services_own_secrets_must_be_beyond_a_guessers_reach(bare_env: Env, secret: str) -> None:
    """CURSOR_SECRET and METRICS_TOKEN are the service's alone: words and sequences are refused.
    Better Auth's secret is the frontend's as well, held to what Better Auth itself accepts but for
    the sequences and repeats a guesser tries first (the test above)."""
    for name in ("CURSOR_SECRET", "METRICS_TOKEN"):
        assert_refused(todo_api("check", env=bare_env(**{name: secret})), name)
    phrase = "correcthorsebatterystaple1234567"
    assert todo_api("check", env=bare_env(BETTER_AUTH_SECRET=phrase)).returncode == 0


# --- a bad value stops the start with one line naming the variable ---------------------------------

BAD_VALUES = [
    ("BETTER_AUTH_SECRET", "too-short"),
    ("BETTER_AUTH_SECRET", "s" * 31),
    ("BETTER_AUTH_SECRET", "s" * 32),
    ("BETTER_AUTH_SECRET", "é" * 16),
    ("BETTER_AUTH_SECRET", "ab" * 32),
    ("BETTER_AUTH_SECRET", " " * 40),
    ("CURSOR_SECRET", "c" * 40),
    ("BETTER_AUTH_SECRETS", "x7Gq2LmN9pR4tV6wY8zA1bC3dE5fH7jK"),  # no version
    ("BETTER_AUTH_SECRETS", "2:x7Gq2LmN9pR4tV6wY8zA1bC3dE5fH7jK,1:too-short"),
    ("CURSOR_SECRETS", "1:x7Gq2LmN9pR4tV6wY8zA1bC3dE5fH7jK,1:Q9wE8rT7yU6iO5pA4sD3fG2hJ1kL0zXc"),
    ("JWT_LEEWAY_SECONDS", "soon"),
    ("JWT_LEEWAY_SECONDS", "-1"),
    ("MAX_BODY_BYTES", "lots"),
    ("MAX_BODY_BYTES", "-1"),
    ("CORS_ORIGINS", "not an origin"),
    ("CORS_ORIGINS", "app.example.com"),
    ("LOG_LEVEL", "LOUD"),
    ("DATABASE_URL", "mysql://tasks:hunter2@db.example/tasks"),
    ("DATABASE_URL", "sqlite:///tasks.db"),
    ("DATABASE_URL", "not a url"),
    ("DATABASE_URL", "postgresql://tasks:hunter2@db.example:fivefourthree/tasks"),
    ("DATABASE_URL", "postgresql://tasks:hunter2@db.example:70000/tasks"),
    ("BETTER_AUTH_URL", "not a url"),
    ("JWT_JWKS_URL", "ftp://auth.example/jwks"),
    ("PORT", "http"),
    ("PORT", "70000"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_serve_refuses_a_bad_value_naming_the_variable(env: Env, variable: str, value: str) -> None:
    line = assert_refused(refuse_to_serve(env(**{variable: value})), variable)
    if variable.endswith("_SECRET") or "hunter2" in value:
        assert value not in line and "hunter2" not in line, "the message leaks a secret"


@pytest.mark.parametrize("command", [["check"], ["migrate"], ["serve", "--port", "0"]], ids=lambda c: c[0])
def test_an_unescaped_at_sign_in_the_password_is_refused_without_showing_any_of_it(
    env: Env, database_url: str, command: list[str]
) -> None:
    address = urlsplit(database_url).netloc.rpartition("@")[2]
    config = env(DATABASE_URL=f"postgresql://postgres:hunter2@leaked-part@{address}/todo")
    result = todo_api(*command, env=config, timeout=60)
    line = assert_refused(result, "DATABASE_URL")
    assert "%40" in line, line
    assert "hunter2" not in result.stdout + result.stderr and "leaked-part" not in result.stdout + result.stderr


def test_serve_on_a_port_in_use_is_one_line(env: Env) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = todo_api("serve", "--no-migrate", "--port", str(port), env=env(), timeout=60)
    line = assert_refused(result, "--port")
    assert result.returncode == 1 and f"127.0.0.1:{port}" in line, line


@pytest.mark.parametrize("user_id", ["", "   ", "u" * 256], ids=["empty", "blank", "256-characters"])
def test_token_refuses_a_user_id_the_service_would_refuse(env: Env, user_id: str) -> None:
    result = todo_api("token", user_id, env=env())
    assert result.returncode == 2 and result.stdout == ""
    assert "argument USER_ID: must be 1 to 255 characters" in result.stderr and "Traceback" not in result.stderr


def test_token_for_the_longest_user_id_is_accepted_by_the_service(service: Service, env: Env) -> None:
    user_id = "u" * 255
    result = todo_api("token", user_id, env=env())
    assert result.returncode == 0, result.stderr
    answer = httpx.get(service.base_url + "/api/tasks", headers={"Authorization": f"Bearer {result.stdout.strip()}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_check_reports_a_bad_value_naming_the_variable(env: Env, variable: str, value: str) -> None:
    assert_refused(todo_api("check", env=env(**{variable: value})), variable)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["serve"], id="serve"),
        pytest.param(["token", "someone"], id="token"),
        pytest.param(["check"], id="check"),
    ],
)
def test_a_database_url_without_a_secret_or_jwks_source_is_refused(
    bare_env: Env, database_url: str, command: list[str]
) -> None:
    config = bare_env(DATABASE_URL=database_url)
    result = refuse_to_serve(config) if command == ["serve"] else todo_api(*command, env=config)
    assert_refused(result, "BETTER_AUTH_SECRET")


@pytest.fixture(scope="module")
def better_auth() -> Iterator[JwksServer]:
    """A local Better Auth stand-in that serves one Ed25519 public key at any path."""
    jwks = JwksServer(SigningKey.generate("EdDSA", kid="k1"), path=None)
    yield jwks
    jwks.stop()


@pytest.mark.parametrize("variable", ["BETTER_AUTH_URL", "JWT_JWKS_URL"])
def test_a_jwks_source_instead_of_a_secret_is_enough_to_serve(
    start_service: Callable[..., Service], better_auth: JwksServer, variable: str
) -> None:
    source = better_auth.url + (JWKS_PATH if variable == "JWT_JWKS_URL" else "")
    started = start_service(BETTER_AUTH_SECRET="", **{variable: source})
    assert httpx.get(started.base_url + "/health").status_code == 200
    assert httpx.get(started.base_url + "/api/tasks").status_code == 401


@pytest.fixture
def signer() -> Iterator[tuple[SigningKey, JwksServer]]:
    key = SigningKey.generate("EdDSA", kid="cursor-test")
    jwks = JwksServer(key, path=None)
    yield key, jwks
    jwks.stop()


def test_without_a_shared_secret_cursors_are_signed_with_a_random_secret_kept_in_the_data_directory(
    database_url: str, tmp_path: Path, signer: tuple[SigningKey, JwksServer]
) -> None:
    """Not with a key derived from DATABASE_URL, which another deployment (or an attacker who can
    guess a password-less URL) would share."""
    key, jwks = signer
    now = int(time.time())
    token = key.sign(
        {"sub": f"cursor-{uuid.uuid4().hex[:8]}", "iat": now, "exp": now + 600, "iss": jwks.url, "aud": jwks.url}
    )
    headers = {"Authorization": f"Bearer {token}"}

    def jwks_only(data: Path) -> Service:
        env = service_env(database_url, BETTER_AUTH_SECRET="", BETTER_AUTH_URL=jwks.url, TODO_API_DATA_DIR=str(data))
        env.pop("CURSOR_SECRET", None)
        return Service(env)

    first, again, elsewhere = jwks_only(tmp_path / "one"), jwks_only(tmp_path / "one"), jwks_only(tmp_path / "two")
    try:
        for title in ["first", "second"]:
            assert httpx.post(first.base_url + "/api/tasks", headers=headers, json={"title": title}).status_code == 201
        page = httpx.get(first.base_url + "/api/tasks", headers=headers, params={"limit": 1})
        cursor = parse_qs(urlsplit(page.links["next"]["url"]).query)["cursor"][0]
        rest = {"first", "second"} - {task["title"] for task in page.json()}
        kept = tmp_path / "one" / "cursor-secret"
        assert stat.S_IMODE(kept.stat().st_mode) & 0o077 == 0, "the cursor secret is readable by others"
        assert len(kept.read_text().strip()) >= 32

        same_secret = httpx.get(again.base_url + "/api/tasks", headers=headers, params={"limit": 1, "cursor": cursor})
        assert same_secret.status_code == 200, same_secret.text
        assert {task["title"] for task in same_secret.json()} == rest
        other_secret = httpx.get(
            elsewhere.base_url + "/api/tasks", headers=headers, params={"limit": 1, "cursor": cursor}
        )
        assert other_secret.status_code == 400, "a cursor verified by another deployment of the same DATABASE_URL"
    finally:
        for service in (first, again, elsewhere):
            service.stop()


# --- DATABASE_URL in the forms people paste --------------------------------------------------------

URL_FORMS = [
    pytest.param("postgresql", "", id="postgresql"),
    pytest.param("postgres", "", id="postgres"),
    pytest.param("postgresql+psycopg", "", id="postgresql+psycopg"),
    pytest.param("postgresql", "sslmode=disable", id="postgresql-sslmode"),
    pytest.param("postgres", "sslmode=disable&connect_timeout=10", id="postgres-libpq-parameters"),
]


@pytest.mark.parametrize(("scheme", "query"), URL_FORMS)
def test_serve_accepts_the_database_url_forms_people_paste(
    start_service: Callable[..., Service], database_url: str, scheme: str, query: str
) -> None:
    started = start_service(DATABASE_URL=spell(database_url, scheme, query))
    assert httpx.get(started.base_url + "/ready").status_code == 200
    user = User(started.base_url)
    try:
        task = user.create(title=f"stored through {scheme}://")
        assert user.http.get("/api/tasks").json() == [task]
    finally:
        user.http.close()


@pytest.mark.parametrize(("scheme", "query"), URL_FORMS)
def test_migrate_at_head_is_a_no_op(env: Env, database_url: str, scheme: str, query: str) -> None:
    assert schema.current(database_url) == schema.head()
    result = todo_api("migrate", env=env(DATABASE_URL=spell(database_url, scheme, query)))
    assert result.returncode == 0, result.stderr
    assert schema.head() in result.stdout
    assert schema.current(database_url) == schema.head()


# --- migrations on a database of its own -----------------------------------------------------------


def test_migrate_moves_the_schema_to_a_revision_and_back(env: Env, empty_url: str) -> None:
    config = env(DATABASE_URL=empty_url)
    steps = [([], schema.head()), (["base"], None), (["head"], schema.head())]
    for revision, expected in steps:
        result = todo_api("migrate", *revision, env=config)
        assert result.returncode == 0, result.stderr
        assert schema.current(empty_url) == expected, revision


def unusable(url: str, problem: str) -> str:
    """`url` (a database this test may use) spoiled in one way, with a password to keep secret."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    return {
        "refused": f"postgresql://owner:hunter2-secret@{host}:{free_port()}/todo",
        "unknown role": f"postgresql://no_such_role:hunter2-secret@{host}:{port}{parts.path}",
        "bad sslmode": f"postgresql://{parts.username}:hunter2-secret@{host}:{port}{parts.path}?sslmode=sometimes",
    }[problem]


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]], ids=["serve", "migrate"])
@pytest.mark.parametrize("problem", ["refused", "unknown role", "bad sslmode"])
@pytest.mark.parametrize("variable", ["DATABASE_URL", "MIGRATION_DATABASE_URL"])
def test_a_database_that_cannot_be_migrated_stops_the_start_with_one_line(
    env: Env, database_url: str, command: list[str], problem: str, variable: str
) -> None:
    result = todo_api(*command, env=env(**{variable: unusable(database_url, problem)}), timeout=30)
    line = assert_refused(result, variable)
    assert line.startswith(f"todo-api: cannot migrate: {variable}: "), line
    assert "hunter2" not in result.stdout + result.stderr


@pytest.fixture
def silent_host() -> Iterator[str]:
    """host:port of a peer that accepts TCP connections and never says a word (a wrong service,
    or a firewall that lets the handshake through)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(
    ("command", "variable"),
    [(["serve", "--port", "0"], "DATABASE_URL"), (["migrate"], "MIGRATION_DATABASE_URL")],
    ids=["serve", "migrate"],
)
def test_a_database_host_that_never_answers_stops_the_start_with_one_line(
    env: Env, silent_host: str, command: list[str], variable: str
) -> None:
    url = f"postgresql://owner:hunter2-secret@{silent_host}/todo"
    try:
        result = todo_api(*command, env=env(**{variable: url}), timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"todo-api {command[0]} still waits for a host that never answers")
    line = assert_refused(result, variable)
    assert line.startswith(f"todo-api: cannot migrate: {variable}: "), line
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr


def test_migrate_waits_for_another_migration_only_as_long_as_configured(env: Env, empty_url: str) -> None:
    engine = create_engine(empty_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as other_migration:
            other_migration.execute(text("SELECT pg_advisory_lock(:key)"), {"key": schema.MIGRATION_LOCK})
            config = env(DATABASE_URL=empty_url, MIGRATION_LOCK_TIMEOUT_SECONDS="1")
            try:
                waited = todo_api("migrate", env=config, timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("todo-api migrate waits for another migration's lock forever")
            line = assert_refused(waited, "MIGRATION_LOCK_TIMEOUT_SECONDS")
            assert waited.returncode == 1 and "another migration" in line, line
            assert schema.current(empty_url) is None
    finally:
        engine.dispose()
    result = todo_api("migrate", env=config)
    assert result.returncode == 0, result.stderr
    assert schema.current(empty_url) == schema.head()


def test_migrate_to_an_unknown_revision_is_one_line(env: Env, database_url: str) -> None:
    result = todo_api("migrate", "no_such_revision", env=env())
    assert_refused(result, "no_such_revision")
    assert schema.current(database_url) == schema.head()


def test_serve_applies_pending_migrations_first(env: Env, empty_url: str) -> None:
    with serving(env(DATABASE_URL=empty_url)) as (base_url, _):
        assert schema.current(empty_url) == schema.head()
        assert httpx.get(base_url + "/ready").status_code == 200


def test_serve_with_no_migrate_leaves_the_schema_alone_and_is_not_ready(env: Env, empty_url: str) -> None:
    with serving(env(DATABASE_URL=empty_url), "--no-migrate") as (base_url, _):
        assert httpx.get(base_url + "/ready").status_code == 503
        assert schema.current(empty_url) is None


@pytest.mark.parametrize("variable", ["DATABASE_URL", "MIGRATION_DATABASE_URL"])
def test_a_migration_job_needs_a_database_url_and_nothing_else(
    bare_env: Env, data_dir: Path, empty_url: str, variable: str
) -> None:
    """No secret, no JWKS source, and no embedded PostgreSQL started beside the one it was given."""
    result = todo_api("migrate", env=bare_env(**{variable: empty_url}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"todo-api: schema at {schema.head()}\n"
    assert "embedded" not in result.stderr
    assert not data_dir.exists(), "an embedded database was initialised"
    assert schema.current(empty_url) == schema.head()


# --- serve -----------------------------------------------------------------------------------------


def test_serve_listens_on_the_port_the_platform_sets_in_PORT(env: Env, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*TODO_API, "serve", "--no-migrate"], env=env(PORT=str(port)), cwd=ROOT, stdout=output, stderr=output
        )
    try:
        wait_until_up(process, answers(f"http://127.0.0.1:{port}/health"), name="serve", log=log.read_text, timeout=60)
        probe = todo_api("health", env=env(PORT=str(port)))  # the container's HEALTHCHECK
        assert (probe.returncode, probe.stderr) == (0, "")
    finally:
        stop(process, timeout=30)
    stopped = todo_api("health", env=env(PORT=str(port)))
    assert stopped.returncode == 1
    assert stopped.stderr.startswith(f"todo-api: http://127.0.0.1:{port}/health: ConnectError"), stopped.stderr


def test_serve_with_several_workers(start_service: Callable[..., Service]) -> None:
    started = start_service("--workers", "2")
    user = User(started.base_url)
    try:
        task = user.create(title="served by a worker")
        for _ in range(10):
            assert user.http.get(f"/api/tasks/{task['id']}").json() == task
    finally:
        user.http.close()


@pytest.fixture
def embedded_pidfile(data_dir: Path) -> Iterator[Path]:
    """The embedded server's postmaster.pid; whatever the test finds, no server outlives it."""
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    yield pidfile
    if pidfile.exists():
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)  # PostgreSQL's fast shutdown
        wait_until_gone(pidfile)


def wait_until_gone(path: Path, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not path.exists()


def test_first_run_needs_no_configuration(bare_env: Env, data_dir: Path, embedded_pidfile: Path) -> None:
    """No DATABASE_URL and no secret: an embedded database, and a development secret announced on start."""
    with serving(bare_env()) as (base_url, log):
        announcement = log.read_text()
        assert "secret" in announcement.lower() and str(data_dir.resolve()) in announcement, announcement
        assert "Warning" not in announcement, announcement
        minted = todo_api("token", "first-run-user", env=bare_env())
        assert minted.returncode == 0, minted.stderr
        headers = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        assert httpx.get(base_url + "/ready").status_code == 200
        created = httpx.post(base_url + "/api/tasks", headers=headers, json={"title": "hello"})
        assert created.status_code == 201, created.text
        assert created.json()["user_id"] == "first-run-user"
        assert embedded_pidfile.exists()


def test_stopping_serve_stops_its_embedded_database(bare_env: Env, embedded_pidfile: Path) -> None:
    """SIGTERM (docker stop, systemd) must not leave an orphaned PostgreSQL holding the data folder."""
    with serving(bare_env()):
        assert embedded_pidfile.exists()
    assert wait_until_gone(embedded_pidfile), "the embedded PostgreSQL is still running after serve stopped"


def test_after_a_killed_serve_a_clean_stop_still_stops_the_embedded_database(
    bare_env: Env, embedded_pidfile: Path
) -> None:
    """A SIGKILLed serve cannot stop its PostgreSQL; the next serve's clean exit must."""
    with serve_process(bare_env()) as (killed, _, _):
        killed.kill()
        killed.wait()
    assert embedded_pidfile.exists(), "nothing stopped the server: the next serve finds it running"
    with serving(bare_env()):
        pass
    assert wait_until_gone(embedded_pidfile), "the embedded PostgreSQL outlived a clean stop after a SIGKILL"


def children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is `pid`."""
    found = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat_file.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="workers watch their master with Linux's PR_SET_PDEATHSIG")
def test_workers_of_a_killed_master_stop_serving(env: Env) -> None:
    with serve_process(env(), "--no-migrate", "--workers", "2") as (master, base_url, _):
        workers = children(master.pid)
        assert len(workers) >= 2, workers
        master.kill()
        master.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their master"
        with pytest.raises(httpx.TransportError):
            httpx.get(base_url + "/health", timeout=5)


# --- the test suite itself -------------------------------------------------------------------------


def test_the_session_database_leaves_no_folder_behind(tmp_path: Path) -> None:
    """The embedded session database (no TEST_DATABASE_URL) deletes its whole temporary folder."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_probe(database_url):\n    assert database_url\n")
    env = {key: value for key, value in os.environ.items() if key not in {"TEST_DATABASE_URL", "TEST_VIA_PGBOUNCER"}}
    # Short, since PostgreSQL's socket goes below it.
    with tempfile.TemporaryDirectory(prefix="todo-api-tmp-") as temporary:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(probe)],
            env={**env, "TMPDIR": temporary},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert list(Path(temporary).glob("todo-api-test-*")) == []


def test_the_served_contract_names_a_server_swagger_ui_can_list(service: Service) -> None:
    served = httpx.get(service.base_url + "/api/openapi.json").json()
    assert served["servers"] == [{"url": "/"}]
    assert httpx.get(service.base_url + served["servers"][0]["url"].rstrip("/") + "/api/tasks").status_code == 401
