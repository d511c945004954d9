"""What one application gives its handlers — the database, the token rules, the cursor keys and
the limits — reached through the request: todo_api.app puts it in every request's scope state,
so two applications in one process never share it."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handlers.rate_limit import Admission, RateLimiter
from handlers.signing import Keyring
from persistence.database import Database

if TYPE_CHECKING:
    from handlers.auth import TokenRules, VerifiedTokens
    from handlers.live import Live

KEY = "todo_api"
ADMISSION = "todo_api.admission"  # the request's place in its user's rate limit
INTERNAL = "todo_api.internal"  # a request the application makes to itself (an MCP tool's call)


@dataclass(frozen=True, slots=True)
class Metrics:
    enabled: bool
    tokens: tuple[bytes, ...]  # the bearer tokens /metrics accepts, any of them; none: open
    exposition: Callable[[], bytes]  # renders the metrics, which the application shell keeps


@dataclass(frozen=True, slots=True)
class AppState:
    database: Database
    tokens: TokenRules
    verified_tokens: VerifiedTokens  # the callers of tokens verified lately
    cursor_keys: Keyring
    max_tasks_per_user: int
    search_timeout_ms: int  # 0: the statement timeout only
    metrics: Metrics
    live: Live
    change_keys: Keyring  # sign the change feed's tokens
    changes_retention_days: int
    stream_heartbeat_seconds: int
    stream_max_seconds: int
    rate_limiter: RateLimiter | None = None  # None: no per-user rate limit

    def install(self, scope: MutableMapping[str, Any]) -> None:
        """Make this state the one handlers find for the request of `scope`."""
        scope.setdefault("state", {})[KEY] = self


def of(scope: MutableMapping[str, Any]) -> AppState:
    """The state of the application serving the request of `scope`."""
    state: AppState = scope["state"][KEY]
    return state


def admission(scope: MutableMapping[str, Any]) -> Admission | None:
    """The rate limit's admission of the request of `scope`, once its token was verified."""
    found: Admission | None = scope.get("state", {}).get(ADMISSION)
    return found
