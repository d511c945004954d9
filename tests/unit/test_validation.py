"""Field errors, in process: one `{field, message}` per problem, in the contract's words, never
echoing the value sent; the fields the server sets come from the contract's readOnly."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

from tests.support import SERVER_FIELDS
from todo_api.app import contract
from todo_api.validation import field_errors, validator_map

SPEC = contract()
SECRET_VALUE = "sk-do-not-echo-me"


def errors_of(schema_name: str, body: Any) -> list[dict[str, str]]:
    schema = {**SPEC["components"]["schemas"][schema_name], "components": SPEC["components"]}
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    return field_errors(validator.iter_errors(body), server_fields=SERVER_FIELDS)


def test_the_server_fields_are_what_the_contract_marks_read_only() -> None:
    body_validator = validator_map(SPEC)["body"]["application/json"]
    assert body_validator.server_fields == SERVER_FIELDS
    assert {"id", "user_id", "created_at", "updated_at"} <= SERVER_FIELDS


def test_a_field_the_server_sets_and_an_unknown_one_each_get_their_own_words() -> None:
    errors = errors_of("TaskCreate", {"title": "x", "id": 1, "colour": SECRET_VALUE})
    assert errors == [
        {"field": "colour", "message": "is not a known field; leave it out"},
        {"field": "id", "message": "is set by the server; leave it out"},
    ]


def test_messages_name_the_field_and_never_echo_the_value() -> None:
    errors = errors_of("TaskCreate", {"title": SECRET_VALUE * 20, "priority": SECRET_VALUE, "tags": [SECRET_VALUE]})
    assert {error["field"] for error in errors} >= {"title", "priority"}
    assert all(SECRET_VALUE not in error["message"] for error in errors), errors


def test_a_missing_required_field_is_named() -> None:
    assert errors_of("TaskCreate", {}) == [{"field": "title", "message": "is required"}]
