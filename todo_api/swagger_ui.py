"""Connexion's middleware stack, with Swagger UI given a server it can list.

Connexion publishes the contract with `servers: [{"url": <base path>}]`, which for an API at the
root is `""`: Swagger UI then lists no server at all. "/" is the same place, spelled so it shows.
"""

from __future__ import annotations

from typing import Any

from connexion.middleware import ConnexionMiddleware
from connexion.middleware.swagger_ui import SwaggerUIAPI, SwaggerUIMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send


class _ContractWithServer(SwaggerUIAPI):
    def _spec_for_prefix(self, request: Request) -> dict[str, Any]:
        spec: dict[str, Any] = super()._spec_for_prefix(request)
        if spec.get("servers") == [{"url": ""}]:
            spec = {**spec, "servers": [{"url": "/"}]}
        return spec


class _SwaggerUI(SwaggerUIMiddleware):
    """Upstream's, with every request outside the contract's and the UI's paths passed straight on:
    upstream sends each one through a copy of its scope and a router that matches none of them."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._served: tuple[str, ...] = ()

    def add_api(self, specification: Any, base_path: str | None = None, arguments: Any = None, **kwargs: Any) -> None:
        api = _ContractWithServer(
            specification, base_path=base_path, arguments=arguments, default=self.default_fn, **kwargs
        )
        self.router.mount(api.base_path, app=api.router)
        # A prefix also takes a path with a slash added, which the router answers with a redirect.
        self._served += tuple(api.base_path + route.path.rstrip("/") for route in api.router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(self._served):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


MIDDLEWARES = [
    _SwaggerUI if middleware is SwaggerUIMiddleware else middleware
    for middleware in ConnexionMiddleware.default_middlewares
]
