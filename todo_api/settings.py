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
_DRIVER_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None
    better_auth_secret: str | None
    better_auth_url: str | None
    jwt_jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    jwt_leeway_seconds: int
    cors_origins: tuple[str, ...]
    max_body_bytes: int
    log_level: str
    openapi_file: Path | None
    api_url: str
    api_token: str | None
    db_pool_size: int
    db_statement_timeout_ms: int
    db_max_per_user: int
    metrics_enabled: bool
    jwks_min_refresh_seconds: int
    migration_database_url: str | None
    migration_lock_timeout_seconds: int
    cursor_secret: str | None
    max_tasks_per_user: int = 10_000
    search_timeout_ms: int = 2000
    metrics_token: str | None = None

    @property
    def verifies_tokens(self) -> bool:
        """Whether any token could be verified: a shared secret or a JWKS source."""
        return bool(self.better_auth_secret or self.better_auth_url or self.jwt_jwks_url)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    secret = _secret(env, "BETTER_AUTH_SECRET")
    better_auth_url = _origin_or_url(env, "BETTER_AUTH_URL")
    jwks_url = _origin_or_url(env, "JWT_JWKS_URL")
    log_level = (text("LOG_LEVEL") or "INFO").upper()
    if log_level not in logging.getLevelNamesMapping():
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR (got {log_level!r})")
    return Settings(
        database_url=database_url(text("DATABASE_URL"), "DATABASE_URL"),
        better_auth_secret=secret,
        better_auth_url=better_auth_url,
        jwt_jwks_url=jwks_url,
        jwt_issuer=text("JWT_ISSUER"),
        jwt_audience=text("JWT_AUDIENCE"),
        jwt_leeway_seconds=_integer(env, "JWT_LEEWAY_SECONDS", default=30, low=0, high=3600),
        cors_origins=_origins(text("CORS_ORIGINS")),
        max_body_bytes=_integer(env, "MAX_BODY_BYTES", default=65536, low=1024, high=64 << 20),
        log_level=log_level,
        openapi_file=_existing_file(text("OPENAPI_FILE"), "OPENAPI_FILE"),
        api_url=_origin_or_url(env, "TODO_API_URL") or "http://127.0.0.1:8000",
        api_token=text("TODO_API_TOKEN"),
        db_pool_size=_integer(env, "DB_POOL_SIZE", default=20, low=1, high=1000),
        db_statement_timeout_ms=_integer(env, "DB_STATEMENT_TIMEOUT_MS", default=5000, low=0, high=3_600_000),
        db_max_per_user=_integer(env, "DB_MAX_PER_USER", default=4, low=1, high=1000),
        metrics_enabled=_boolean(env, "METRICS_ENABLED", default=True),
        jwks_min_refresh_seconds=_integer(env, "JWT_JWKS_MIN_REFRESH_SECONDS", default=5, low=0, high=3600),
        migration_database_url=database_url(text("MIGRATION_DATABASE_URL"), "MIGRATION_DATABASE_URL"),
        migration_lock_timeout_seconds=_integer(env, "MIGRATION_LOCK_TIMEOUT_SECONDS", default=60, low=1, high=86400),
        cursor_secret=_secret(env, "CURSOR_SECRET"),
        max_tasks_per_user=_integer(env, "MAX_TASKS_PER_USER", default=10_000, low=1, high=10_000_000),
        search_timeout_ms=_integer(env, "SEARCH_TIMEOUT_MS", default=2000, low=0, high=3_600_000),
        metrics_token=text("METRICS_TOKEN"),
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


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A shared secret long and varied enough to sign with; unset when empty."""
    raw = env.get(name, "")
    if not raw:
        return None
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
    return raw.strip()


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
