"""The HTTP problems handlers raise (RFC 9457 problem+json, rendered by todo_api.problems);
this module imports nothing of ours, so every layer may use it."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from connexion.exceptions import ProblemException

CHALLENGE = 'Bearer realm="todo-api"'
FieldErrors = Sequence[dict[str, str]]


class Problem(ProblemException):
    """An HTTP error with a detail for people and, for validation, one entry per field."""

    status_code: int = 500

    def __init__(self, detail: str, *, errors: FieldErrors | None = None, headers: dict[str, str] | None = None):
        super().__init__(status=self.status_code, title=HTTPStatus(self.status_code).phrase, detail=detail)
        self.errors = errors
        self.headers = headers


class BadRequest(Problem):
    status_code = 400


class Unauthorized(Problem):
    """A bearer token was presented and refused: RFC 6750's `invalid_token` challenge says why.
    (A request without a token gets the bare challenge, added in `response`.)"""

    status_code = 401

    def __init__(self, detail: str) -> None:
        # Parts of the detail come from the token (its `alg`): printable ASCII only, no `\`, no `"`.
        description = "".join("'" if c == '"' else c for c in detail[:200] if " " <= c <= "~" and c != "\\")
        challenge = f'{CHALLENGE}, error="invalid_token", error_description="{description}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(Problem):
    status_code = 403


class NotFound(Problem):
    status_code = 404


class PayloadTooLarge(Problem):
    status_code = 413


class UriTooLong(Problem):
    status_code = 414


class UnsupportedMediaType(Problem):
    status_code = 415


class Unprocessable(Problem):
    status_code = 422


def invalid(name: str, message: str) -> Unprocessable:
    """A 422: `name` (a body field or query parameter) is invalid, as `message` says."""
    problem: Unprocessable = Unprocessable(f"{name} {message}", errors=[{"field": name, "message": message}])
    return problem


class Gone(Problem):
    status_code = 410


class TooManyRequests(Problem):
    status_code = 429


class HeadersTooLarge(Problem):
    status_code = 431


class ServiceUnavailable(Problem):
    status_code = 503
