"""libpq: the connection settings the service adds to any URL, the host a multi-host URL tries
first, and the causes of failures, in words a log line and a 503 can carry."""

from __future__ import annotations

import re
import select
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus

# libpq defaults, unless DATABASE_URL says otherwise: give up connecting after 5 s; notice a
# silent peer on an idle connection (keepalives) and unacknowledged data (tcp_user_timeout).
LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

# What libpq says when it cannot connect, and the cause a log line names (first match wins).
READ_ONLY = "read-only (a standby, or default_transaction_read_only)"
_CONNECT_FAILURES = (
    ("too many clients", "too many connections"),
    ("too many connections", "too many connections"),
    ("remaining connection slots", "too many connections"),
    ("read-only", READ_ONLY),
    ("not in hot standby mode", "not a standby (target_session_attrs)"),
    ("hot standby mode", READ_ONLY),  # target_session_attrs=read-write refused a standby
    ("in recovery mode", "starting up or in recovery"),
    ("starting up", "starting up or in recovery"),
    ("not yet accepting connections", "starting up or in recovery"),
    ("shutting down", "shutting down"),
    ("authentication", "authentication failed"),
    ("password", "authentication failed"),
    ("translate host name", "unknown host"),
    ("timeout expired", "connect timeout"),
    ("connection refused", "connection refused"),
    ("no such file or directory", "connection refused"),
)
_HOST_FAILURE = re.compile(r"^- host: '([^']*)', port: '([^']*)'.*?: (connection failed: .*)$", re.MULTILINE)


def conninfo(url: str) -> str:
    """The libpq connection string for a settings URL (any form libpq takes, several hosts
    included), with our timeouts and keepalives wherever the URL does not set its own."""
    scheme, _, rest = url.partition("://")
    params = conninfo_to_dict(f"{scheme.split('+')[0]}://{rest}")
    return make_conninfo("", **{**LIBPQ_DEFAULTS, **params})


def first_host(conninfo: str, host: tuple[str, str] | None) -> str:
    """`conninfo` with `host` (host, port) tried first: after a failover a multi-host URL's first
    host may be one that no longer answers, and each new connection would wait its connect
    timeout there before trying the next."""
    params = conninfo_to_dict(conninfo)
    hosts = str(params.get("host", "")).split(",")
    if host is None or len(hosts) < 2:
        return conninfo
    lists = {key: str(params[key]).split(",") for key in ("host", "hostaddr", "port") if key in params}
    lists = {key: values * len(hosts) if len(values) == 1 else values for key, values in lists.items()}
    ports = lists.get("port", ["5432"] * len(hosts))
    order = sorted(range(len(hosts)), key=lambda i: (hosts[i], ports[i] or "5432") != host)
    return make_conninfo(conninfo, **{key: ",".join(values[i] for i in order) for key, values in lists.items()})


def idle_and_alive(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection still looks usable, without a round trip: nothing may have
    arrived on its socket since it was last used (the server closing it, or a setting change
    such as read-only, make it readable)."""
    pgconn = connection.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    return not poller.poll(0)


def failure(error: psycopg.Error) -> str | None:
    """The cause, for a log line, when `error` means the database is unavailable; else None."""
    if isinstance(error, errors.ReadOnlySqlTransaction):
        return READ_ONLY
    if isinstance(error, errors.QueryCanceled):
        return "statement timeout"
    if isinstance(error, errors.IdleInTransactionSessionTimeout):
        # The server ended a transaction left idle between statements longer than the statement
        # timeout (a stalled process, a slow network): rolled back, and the connection closed.
        return "transaction idle past the statement timeout"
    if isinstance(error, errors.TooManyConnections):
        return "too many connections"
    if isinstance(error, psycopg.OperationalError):
        return "connection lost" if error.sqlstate is None else f"{type(error).__name__} ({error.sqlstate})"
    return None


def connect_failure(error: psycopg.OperationalError) -> str:
    """The cause, in one line; with several hosts (libpq's failover URL) each host's own."""
    message = str(error)
    hosts = _HOST_FAILURE.findall(message)
    if len(hosts) > 1:
        return "; ".join(f"{host}:{port} {_cause(failure)}" for host, port, failure in hosts)
    return _cause(message)


def _cause(message: str) -> str:
    lowered = message.lower()
    return next((cause for words, cause in _CONNECT_FAILURES if words in lowered), "cannot connect")
