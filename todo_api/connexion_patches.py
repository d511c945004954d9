"""Per-request work Connexion 3.3.0 repeats, done once instead (see bench/PROFILE.md, "Connexion's
per-request decorators"). Applied only to the version it was written against; any other version
is left alone and a warning says so.

Upstream, on every request, `AsyncOperation.fn` builds a new `StarletteDecorator`, whose wrapper
then builds the parameter and response decorators again (four `functools.wraps` and one
`inspect.signature` of the handler), and the security wrapper calls `inspect.signature` twice on
the bearer function. None of it depends on the request: the chain is built once per operation
here, and the security check's signature read once per function.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from connexion import security
from connexion.apps.asynchronous import AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.utils import inspect_function_arguments

WRITTEN_FOR = "3.3.0"
logger = logging.getLogger(__name__)


def _decorated_once(self: AsyncOperation) -> Callable[[], Awaitable[Any]]:
    """What `AsyncOperation.fn` returns, with the decorator chain built once, not per call:
    `ASGIDecorator.__call__`'s wrapper with `decorate()` hoisted out of it."""
    decorator = StarletteDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)
    decorated = decorator.decorate(self._fn)

    async def handle() -> Any:
        request = decorator.framework.get_request(uri_parser=decorator.uri_parser, scope=scope, receive=receive)
        return await decorated(request)

    return handle


_ONCE_PER_OPERATION = functools.cached_property(_decorated_once)
_ONCE_PER_OPERATION.__set_name__(AsyncOperation, "fn")
_UPSTREAM_FN = AsyncOperation.__dict__["fn"]
# Security functions are few and live as long as the app: an unbounded cache stays small.
_SIGNATURE_ONCE = functools.cache(inspect_function_arguments)


def apply(version: str | None = None) -> bool:
    """Install the patch if `version` (default: the installed Connexion's) is the one it was
    written for; True when installed. Idempotent."""
    version = version or importlib.metadata.version("connexion")
    if version != WRITTEN_FOR:
        logger.warning("connexion %s: per-request speed patch not applied (written for %s only)", version, WRITTEN_FOR)
        return False
    AsyncOperation.fn = _ONCE_PER_OPERATION
    security.inspect_function_arguments = _SIGNATURE_ONCE
    return True


def remove() -> None:
    """Back to upstream's per-request behaviour (for measuring the patch against it)."""
    AsyncOperation.fn = _UPSTREAM_FN
    security.inspect_function_arguments = inspect_function_arguments
