"""What one application gives its handlers — the database, the token rules, the cursor key and
the limits — reached through the request: todo_api.app puts it in every request's scope state,
so two applications in one process never share it."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persistence.database import Database

if TYPE_CHECKING:
    from handlers.auth import TokenRules

KEY = "todo_api"


@dataclass(frozen=True, slots=True)
class Metrics:
    enabled: bool
    token: bytes | None  # the bearer token /metrics requires; None: open
    exposition: Callable[[], bytes]  # renders the metrics, which the application shell keeps


@dataclass(frozen=True, slots=True)
class AppState:
    database: Database
    tokens: TokenRules
    cursor_key: bytes
    max_tasks_per_user: int
    search_timeout_ms: int  # 0: the statement timeout only
    metrics: Metrics

    def install(self, scope: MutableMapping[str, Any]) -> None:
        """Make this state the one handlers find for the request of `scope`."""
        scope.setdefault("state", {})[KEY] = self


def of(scope: MutableMapping[str, Any]) -> AppState:
    """The state of the application serving the request of `scope`."""
    state: AppState = scope["state"][KEY]
    return state
