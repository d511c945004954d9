"""JSON responses with an explicit media type (Connexion cannot guess between JSON and problem+json)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_response(content: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`content` as application/json; datetimes in RFC 3339 with `Z` for UTC."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_UTC_Z),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )
