"""Configuration, read once from the environment; a bad value stops the start with one line."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MIN_SECRET_BYTES = 32
# A generous estimate (length × log2 of distinct bytes) that still refuses "s" * 32 or "ab" * 16.
MIN_SECRET_BITS = 128
# zxcvbn's estimate of a guesser's work, which sees words, sequences and repeats: it refuses
# "0123456789abcdef" * 2 (15 bits) and "correcthorsebatterystaple1234567" (56), where any random
# secret of 16 characters or more scores above 90. Better Auth's secret is the frontend's too, set
# by Better Auth's rules: the service refuses only what a guesser tries first (sequences, repeats)
# rather than refuse to start on a phrase the frontend already signs with.
MIN_GUESS_BITS = 64
MIN_AUTH_GUESS_BITS = 32
ZXCVBN_MAX_CHARS = 72  # its own limit; a longer secret is judged by its first 72 characters
_DRIVER_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    better_auth_secret: str | None = None  # the current shared secret: the first of BETTER_AUTH_SECRETS, else this
    better_auth_url: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 65536
    log_level: str = "INFO"
    openapi_file: Path | None = None
    api_url: str = "http://127.0.0.1:8000"
    api_token: str | None = None
    db_pool_size: int = 20
    db_statement_timeout_ms: int = 5000
    db_max_per_user: int = 4
    metrics_enabled: bool = True
    jwks_min_refresh_seconds: int = 5
    migration_database_url: str | None = None
    migration_lock_timeout_seconds: int = 60
    cursor_secret: str | None = None
    max_tasks_per_user: int = 10_000
    search_timeout_ms: int = 2000
    metrics_token: str | None = None  # one or several, comma-separated
    port: int = 8000
    older_auth_secrets: tuple[str, ...] = ()  # still accepted while tokens they signed live
    older_cursor_secrets: tuple[str, ...] = ()  # still verify cursors they signed
    api_token_command: str | None = None
    changes_retention_days: int = 30
    max_streams_per_user: int = 10
    listen_database_url: str | None = None
    stream_heartbeat_seconds: int = 15
    stream_max_seconds: int = 3600
    reminder_late_seconds: int = 60
    rate_limit_per_second: int = 20
    rate_limit_burst: int = 50
    max_connections: int = 4096
    request_timeout_seconds: int = 30
    data_dir: Path | None = None  # the embedded database's and kept secrets' folder; None: the platform's

    @property
    def verifies_tokens(self) -> bool:
        """Whether any token could be verified: a shared secret or a JWKS source."""
        return bool(self.better_auth_secret or self.better_auth_url or self.jwt_jwks_url)

    @property
    def auth_secrets(self) -> tuple[str, ...]:
        """Every shared secret a token may be signed with, the current first."""
        return (self.better_auth_secret, *self.older_auth_secrets) if self.better_auth_secret else ()

    @property
    def cursor_secrets(self) -> tuple[str, ...]:
        """The secrets of list cursors, the signing one first: CURSOR_SECRETS', else the shared secrets."""
        return (self.cursor_secret, *self.older_cursor_secrets) if self.cursor_secret else self.auth_secrets


DEFAULTS = Settings()  # each default is written once, on its field


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    auth_secrets = _secrets(env, "BETTER_AUTH_SECRETS", "BETTER_AUTH_SECRET", MIN_AUTH_GUESS_BITS)
    cursor_secrets = _secrets(env, "CURSOR_SECRETS", "CURSOR_SECRET")
    better_auth_url = _origin_or_url(env, "BETTER_AUTH_URL")
    jwks_url = _origin_or_url(env, "JWT_JWKS_URL")
    log_level = (text("LOG_LEVEL") or DEFAULTS.log_level).upper()
    if log_level not in logging.getLevelNamesMapping():
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR (got {log_level!r})")
    return Settings(
        database_url=database_url(text("DATABASE_URL"), "DATABASE_URL"),
        better_auth_secret=auth_secrets[0] if auth_secrets else None,
        older_auth_secrets=auth_secrets[1:],
        better_auth_url=better_auth_url,
        jwt_jwks_url=jwks_url,
        jwt_issuer=text("JWT_ISSUER"),
        jwt_audience=text("JWT_AUDIENCE"),
        jwt_leeway_seconds=_integer(env, "JWT_LEEWAY_SECONDS", default=DEFAULTS.jwt_leeway_seconds, low=0, high=3600),
        cors_origins=_origins(text("CORS_ORIGINS")),
        max_body_bytes=_integer(env, "MAX_BODY_BYTES", default=DEFAULTS.max_body_bytes, low=1024, high=64 << 20),
        log_level=log_level,
        openapi_file=_existing_file(text("OPENAPI_FILE"), "OPENAPI_FILE"),
        data_dir=None if (folder := text("TODO_API_DATA_DIR")) is None else Path(folder).expanduser().resolve(),
        api_url=_origin_or_url(env, "TODO_API_URL") or DEFAULTS.api_url,
        api_token=text("TODO_API_TOKEN"),
        api_token_command=text("TODO_API_TOKEN_COMMAND"),
        db_pool_size=_integer(env, "DB_POOL_SIZE", default=DEFAULTS.db_pool_size, low=1, high=1000),
        db_statement_timeout_ms=_integer(
            env, "DB_STATEMENT_TIMEOUT_MS", default=DEFAULTS.db_statement_timeout_ms, low=0, high=3_600_000
        ),
        db_max_per_user=_integer(env, "DB_MAX_PER_USER", default=DEFAULTS.db_max_per_user, low=1, high=1000),
        metrics_enabled=_boolean(env, "METRICS_ENABLED", default=DEFAULTS.metrics_enabled),
        jwks_min_refresh_seconds=_integer(
            env, "JWT_JWKS_MIN_REFRESH_SECONDS", default=DEFAULTS.jwks_min_refresh_seconds, low=0, high=3600
        ),
        migration_database_url=database_url(text("MIGRATION_DATABASE_URL"), "MIGRATION_DATABASE_URL"),
        migration_lock_timeout_seconds=_integer(
            env, "MIGRATION_LOCK_TIMEOUT_SECONDS", default=DEFAULTS.migration_lock_timeout_seconds, low=1, high=86400
        ),
        cursor_secret=cursor_secrets[0] if cursor_secrets else None,
        older_cursor_secrets=cursor_secrets[1:],
        max_tasks_per_user=_integer(
            env, "MAX_TASKS_PER_USER", default=DEFAULTS.max_tasks_per_user, low=1, high=10_000_000
        ),
        search_timeout_ms=_integer(env, "SEARCH_TIMEOUT_MS", default=DEFAULTS.search_timeout_ms, low=0, high=3_600_000),
        metrics_token=_secrets_listed(env, "METRICS_TOKEN"),
        port=_integer(env, "PORT", default=DEFAULTS.port, low=0, high=65535),
        changes_retention_days=_integer(
            env, "CHANGES_RETENTION_DAYS", default=DEFAULTS.changes_retention_days, low=1, high=3650
        ),
        max_streams_per_user=_integer(
            env, "MAX_STREAMS_PER_USER", default=DEFAULTS.max_streams_per_user, low=1, high=1000
        ),
        listen_database_url=database_url(text("LISTEN_DATABASE_URL"), "LISTEN_DATABASE_URL"),
        stream_heartbeat_seconds=_integer(
            env, "STREAM_HEARTBEAT_SECONDS", default=DEFAULTS.stream_heartbeat_seconds, low=1, high=15
        ),
        stream_max_seconds=_integer(env, "STREAM_MAX_SECONDS", default=DEFAULTS.stream_max_seconds, low=1, high=86400),
        reminder_late_seconds=_integer(
            env, "REMINDER_LATE_SECONDS", default=DEFAULTS.reminder_late_seconds, low=1, high=86400
        ),
        rate_limit_per_second=_integer(
            env, "RATE_LIMIT_PER_SECOND", default=DEFAULTS.rate_limit_per_second, low=0, high=100_000
        ),
        # A frontend's burst of 20 concurrent requests must always pass (SPEC "Bounds").
        rate_limit_burst=_integer(env, "RATE_LIMIT_BURST", default=DEFAULTS.rate_limit_burst, low=20, high=1_000_000),
        max_connections=_integer(env, "MAX_CONNECTIONS", default=DEFAULTS.max_connections, low=16, high=1_000_000),
        request_timeout_seconds=_integer(
            env, "REQUEST_TIMEOUT_SECONDS", default=DEFAULTS.request_timeout_seconds, low=1, high=3600
        ),
    )


def database_url(raw: str | None, name: str = "DATABASE_URL") -> str | None:
    """The SQLAlchemy URL for a pasted `postgres://`, `postgresql://` or `postgresql+psycopg://` URL."""
    if raw is None:
        return None
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in _DRIVER_SCHEMES:
        raise ConfigError(
            f"{name} must start with postgresql://, postgres:// or postgresql+psycopg:// "
            f"(got scheme {scheme.split(':')[0]!r})"
        )
    # An unescaped "@" in the password would make the rest of it the host, shown in every error.
    if rest.partition("/")[0].count("@") > 1:
        raise ConfigError(f"{name} has more than one '@' before the host; write an '@' in the password as %40")
    url = f"{_DRIVER_SCHEMES[scheme.lower()]}://{rest}"
    if not _port_is_valid(url):
        raise ConfigError(f"{name} must have a port from 1 to 65535, or none for 5432")
    return url


def _port_is_valid(url: str) -> bool:
    try:
        port = make_url(url).port
    except (ValueError, ArgumentError):  # not a number
        return False
    return port is None or 1 <= port <= 65535


def _secrets(env: Mapping[str, str], plural: str, singular: str, guess_bits: int = MIN_GUESS_BITS) -> tuple[str, ...]:
    """The secrets of `plural` in Better Auth's own BETTER_AUTH_SECRETS format — comma-separated
    `<version>:<secret>` entries, the current first — then `singular`'s, unless listed already
    (Better Auth keeps BETTER_AUTH_SECRET as its legacy secret beside the list)."""
    listed: list[str] = []
    versions: set[str] = set()
    for entry in filter(str.strip, env.get(plural, "").split(",")):
        version, colon, value = entry.strip().partition(":")
        if not colon or not version.strip().isdigit():
            raise ConfigError(f"{plural} must be comma-separated <version>:<secret> entries, the current first")
        if version.strip() in versions:
            raise ConfigError(f"{plural} names version {version.strip()} twice")
        versions.add(version.strip())
        listed.append(_strong(value, f"{plural} (version {version.strip()})", guess_bits))
    single = _secret(env, singular, guess_bits)
    return tuple(listed) + ((single,) if single and single not in listed else ())


def _secret(env: Mapping[str, str], name: str, guess_bits: int = MIN_GUESS_BITS) -> str | None:
    """A shared secret long and varied enough to sign with; unset when empty."""
    raw = env.get(name, "")
    return _strong(raw, name, guess_bits) if raw else None


def _secrets_listed(env: Mapping[str, str], name: str) -> str | None:
    """One secret or several, comma-separated (a rotation), each strong; unset when empty."""
    raw = env.get(name, "")
    if not raw.strip():
        return None
    return ",".join(_strong(secret, name) for secret in raw.split(",") if secret.strip())


def _strong(raw: str, name: str, guess_bits: int = MIN_GUESS_BITS) -> str:
    """`raw`, stripped, if it is long and varied enough to sign with (a guesser's work at least
    2**`guess_bits`); ConfigError naming `name` else."""
    if not raw.strip():
        raise ConfigError(f"{name} is only white space; generate one with `openssl rand -base64 32`")
    secret = raw.strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes "
            f"(got {len(secret)}); generate one with `openssl rand -base64 32`"
        )
    if len(secret) * math.log2(len(set(secret))) < MIN_SECRET_BITS:
        raise ConfigError(
            f"{name} repeats too few characters ({len(set(secret))} distinct) to be a secret; "
            "generate one with `openssl rand -base64 32`"
        )
    if _guess_bits(raw.strip()) < guess_bits:
        raise ConfigError(
            f"{name} is made of words, sequences or repeats a guesser tries first; "
            "generate one with `openssl rand -base64 32`"
        )
    return raw.strip()


def _guess_bits(secret: str) -> float:
    from zxcvbn import zxcvbn  # a dictionary of 30 000 words: loaded only when a secret is set

    return math.log2(float(zxcvbn(secret[:ZXCVBN_MAX_CHARS])["guesses"]))


def _integer(env: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number from {low} to {high} (got {raw!r})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high} (got {value})")
    return value


def _boolean(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (got {raw!r})")


def _origin_or_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL (got {raw!r})")
    return raw.rstrip("/")


def _existing_file(raw: str | None, name: str) -> Path | None:
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name} must name a readable file (got {raw!r})")
    return path


def _origins(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
            raise ConfigError(
                f"CORS_ORIGINS must be comma-separated origins like https://app.example.com (got {origin!r})"
            )
    return origins
