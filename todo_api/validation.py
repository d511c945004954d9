"""Connexion's validators, answering as openapi.yaml declares: 422 with one entry per field, 400 only for
bodies that are not UTF-8 JSON, 415 for bodies that are not JSON, 404 for a bad path id."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.lifecycle import ConnexionRequest
from connexion.validators import AbstractRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from handlers.problems import BadRequest, NotFound, Unprocessable, UnsupportedMediaType

MAX_SHOWN_NAME_CHARS = 64


def field_errors(
    errors: Iterable[ValidationError], prefix: str = "", server_fields: Collection[str] = ()
) -> list[dict[str, str]]:
    """One `{field, message}` per problem; messages never echo the offending value. A field the
    body may not carry is said to be the server's when it is one of `server_fields`."""
    found: list[dict[str, str]] = []
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        path = prefix + ".".join(_shown(str(part)) for part in error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                reason = "is set by the server" if extra in server_fields else "is not a known field"
                found.append({"field": _join(path, extra), "message": f"{reason}; leave it out"})
        elif error.validator == "required":
            for missing in error.validator_value:
                if missing not in error.instance:
                    found.append({"field": _join(path, missing), "message": "is required"})
        else:
            found.append({"field": path or "body", "message": _message(error)})
    return found


def _join(path: str, name: str) -> str:
    return f"{path}.{_shown(name)}" if path else _shown(name)


def _shown(name: str) -> str:
    """A name the client chose, safe to echo: non-printable characters (lone surrogates, controls)
    escaped as in Python (`\\ud800`), at most MAX_SHOWN_NAME_CHARS of them."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name[:MAX_SHOWN_NAME_CHARS])
    return shown + "…" if len(name) > MAX_SHOWN_NAME_CHARS else shown


def _message(error: ValidationError) -> str:
    schema, value = error.schema, error.validator_value
    if "x-message" in schema and error.validator in ("pattern", "maxLength", "minLength"):
        return str(schema["x-message"])
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: (
            f"must be {'an' if value in ('array', 'integer', 'object') else 'a'} {value}"
            + (" or null" if schema.get("nullable") else "")
        ),
        "enum": lambda: "must be one of " + ", ".join(map(str, value)),
        "format": lambda: (
            "must be an RFC 3339 date-time with an offset" if value == "date-time" else f"must be a {value}"
        ),
        "maxLength": lambda: f"must be at most {value} characters",
        "minLength": lambda: f"must be at least {value} characters",
        "maxItems": lambda: f"must have at most {value} items",
        "minimum": lambda: f"must be at least {value}",
        "maximum": lambda: f"must be at most {value}",
        "minProperties": lambda: "must name at least one field to change",
        "pattern": lambda: "has characters or a length that are not allowed",
    }
    return messages.get(error.validator, lambda: "is not valid")()


class JSONBodyValidator(AbstractRequestBodyValidator):
    """Reads the whole body once (its size is already capped), checks media type, UTF-8, JSON
    syntax and the schema, then replays it to the handler."""

    server_fields: frozenset[str] = frozenset()  # set by validator_map, from the contract

    def __init__(
        self,
        *,
        schema: dict[str, Any],
        required: bool = False,
        nullable: bool = False,
        encoding: str,
        strict_validation: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            schema=schema, required=required, nullable=nullable, encoding=encoding, strict_validation=strict_validation
        )
        self._validator = _validator(schema, Draft4RequestValidator)

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        messages: list[MutableMapping[str, Any]] = []
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()  # the body was cut short: nothing to validate, nobody to answer
            messages.append(message)
            more_body = message.get("more_body", False)
        raw = b"".join(message.get("body", b"") for message in messages)
        if raw.strip():
            self._check(raw, Headers(scope=scope))
        elif self._required:
            raise Unprocessable("a JSON request body is required", errors=[{"field": "body", "message": "is required"}])
        return self._insert_messages(receive, messages=messages), scope

    def _check(self, raw: bytes, headers: Headers) -> None:
        if "content-type" not in headers:
            raise UnsupportedMediaType("send the body as application/json")
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
        except UnicodeDecodeError:
            raise BadRequest("the request body is not valid UTF-8") from None
        except RecursionError:
            raise BadRequest("the request body is nested too deeply") from None
        except ValueError as error:
            raise BadRequest(f"the request body is not valid JSON: {error}") from None
        errors = field_errors(self._validator.iter_errors(body), server_fields=self.server_fields)
        errors = errors or list(_unpaired_surrogates(body))
        if errors:
            raise Unprocessable(_summary(errors), errors=errors)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _unpaired_surrogates(value: Any, path: str = "") -> Iterable[dict[str, str]]:
    """Strings JSON can carry (`"\\ud800"`) but Unicode text cannot: JSON Schema has no word for them."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            yield {"field": path or "body", "message": "must be valid Unicode text (it has an unpaired surrogate)"}
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unpaired_surrogates(key, path or "body")
            yield from _unpaired_surrogates(item, _join(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unpaired_surrogates(item, _join(path, str(index)))


_validators: dict[tuple[int, type[Draft4Validator]], Draft4Validator] = {}


def _validator(schema: dict[str, Any], kind: type[Draft4Validator]) -> Draft4Validator:
    """The one `kind` of validator of `schema`. Connexion builds the classes that validate per
    request; the schemas live with the app. Keying by id is safe: the cached validator holds its
    schema, and an id is reused only once its object is gone."""
    key = (id(schema), kind)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = kind(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    return validator


class RequestParameterValidator(ParameterValidator):
    """Path problems are 404 (no such task); query and header problems are 422."""

    def validate(self, scope: Scope) -> None:
        request = ConnexionRequest(scope, uri_parser=self.uri_parser)
        for param in self.parameters.get("path", []):
            if self._errors(param, request.path_params.get(param["name"])):
                raise NotFound(f"no such {param['name']}")
        errors: list[dict[str, str]] = []
        if self.strict_validation:
            for extra in sorted(self.validate_query_parameter_list(request, self.security_query_params)):
                errors.append({"field": _shown(extra), "message": "is not a known query parameter"})
        given = QueryParams(scope.get("query_string", b""))
        for param in self.parameters.get("query", []):
            if param["schema"].get("type") != "array" and len(given.getlist(param["name"])) > 1:
                errors.append({"field": param["name"], "message": "is given more than once; give it once"})
            else:
                errors += self._errors(param, request.query_params.get(param["name"]))
        for param in self.parameters.get("header", []):
            errors += self._errors(param, request.headers.get(param["name"]))
        if errors:
            raise Unprocessable(_summary(errors), errors=errors)

    @staticmethod
    def _errors(param: dict[str, Any], value: Any) -> list[dict[str, str]]:
        if value is None:
            return [{"field": param["name"], "message": "is required"}] if param.get("required") else []
        validator = _validator(param["schema"], Draft4Validator)
        return [
            {"field": param["name"] + (f".{e['field']}" if e["field"] != "body" else ""), "message": e["message"]}
            for e in field_errors(validator.iter_errors(value))
        ]


def _summary(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{error['field']} {error['message']}" for error in errors)


def validator_map(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Connexion's validators for the contract `spec`: a body field that a schema of the contract
    marks readOnly is refused as the server's to set."""
    server_fields = frozenset(
        name
        for schema in spec["components"]["schemas"].values()
        for name, field in schema.get("properties", {}).items()
        if field.get("readOnly")
    )
    body = type(JSONBodyValidator.__name__, (JSONBodyValidator,), {"server_fields": server_fields})
    return {"body": MediaTypeDict({"*/*json": body}), "parameter": RequestParameterValidator}
