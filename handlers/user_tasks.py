"""The compatibility form `/api/{user_id}/tasks…`: exactly the primary form's handlers.

handlers.auth.verify_token has already refused (403) any path `user_id` that is not the caller,
so each handler here drops it and calls its twin in handlers.tasks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from handlers import changes, tasks

Handler = Callable[..., Awaitable[Response]]


def _same_as(handler: Handler) -> Handler:
    # functools.wraps exposes the twin's signature, which Connexion reads to pass arguments.
    @functools.wraps(handler)
    async def without_path_user(user_id: str, **kwargs: Any) -> Response:
        return await handler(**kwargs)

    return without_path_user


find = _same_as(tasks.find)
create = _same_as(tasks.create)
get = _same_as(tasks.get)
replace = _same_as(tasks.replace)
update = _same_as(tasks.update)
delete = _same_as(tasks.delete)
complete = _same_as(tasks.complete)
find_changes = _same_as(changes.find)
stream_changes = _same_as(changes.stream)
