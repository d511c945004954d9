"""Connexion's `AsyncApp`, with the per-request work Connexion 3.3.0 repeats done once (see
bench/PROFILE.md, "Connexion's per-request decorators"), through the extension points an app is
given: its own operation class and a `security_map`. Nothing of Connexion's is patched, so another
app in the same process gets upstream's behaviour; on any version but the one this was written
against, this app does too, and a warning says so.

Upstream, on every request, `AsyncOperation.fn` builds a new `StarletteDecorator`, whose wrapper
then builds the parameter and response decorators again (four `functools.wraps` and one
`inspect.signature` of the handler), and the bearer check calls `inspect.signature` twice on the
bearer function. None of it depends on the request.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from connexion import AsyncApp
from connexion.apps.abstract import AbstractApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.operations import AbstractOperation
from connexion.security import BearerSecurityHandler

WRITTEN_FOR = "3.3.0"
logger = logging.getLogger(__name__)


class _Operation(AsyncOperation):
    @functools.cached_property
    def fn(self) -> Callable[[], Awaitable[Any]]:
        """`ASGIDecorator.__call__`'s wrapper with `decorate()` hoisted out of it: built once."""
        decorator = StarletteDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)
        decorated = decorator.decorate(self._fn)

        async def handle() -> Any:
            request = decorator.framework.get_request(uri_parser=decorator.uri_parser, scope=scope, receive=receive)
            return await decorated(request)

        return handle


class _Api(AsyncApi):
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return _Operation.from_operation(operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)


class _Routes(AsyncASGIApp):
    api_cls = _Api


class _Bearer(BearerSecurityHandler):
    # Bearer functions are few and live as long as the app: an unbounded cache stays small.
    _accepts_kwarg = staticmethod(functools.cache(BearerSecurityHandler._accepts_kwarg))


def once_per_operation(version: str | None = None) -> bool:
    """Whether `version` (default: the installed Connexion's) is the one this was written for."""
    version = version or importlib.metadata.version("connexion")
    if version != WRITTEN_FOR:
        logger.warning("connexion %s: per-request work as upstream does it (written for %s only)", version, WRITTEN_FOR)
        return False
    return True


class App(AsyncApp):
    """`AsyncApp` whose operations build their decorator chain once and whose bearer check reads
    its function's signature once; `once=False` is upstream's `AsyncApp` (for measuring)."""

    def __init__(self, import_name: str, *, once: bool | None = None, **options: Any) -> None:
        once = once_per_operation() if once is None else once
        # All that AsyncApp.__init__ adds to AbstractApp's is this attribute, set to upstream's class.
        self._middleware_app = _Routes() if once else AsyncASGIApp()
        if once:
            options["security_map"] = {"bearer": _Bearer, **(options.get("security_map") or {})}
        AbstractApp.__init__(self, import_name, **options)
