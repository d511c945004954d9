"""Field errors, in process: one `{field, message}` per problem, in the contract's words, never
echoing the value sent; the fields the server sets come from the contract's readOnly."""

from __future__ import annotations

from typing import Any

from connexion.resolver import Resolver
from jsonschema import Draft4Validator

from tests.support import SERVER_FIELDS
from todo_api import validation
from todo_api.app import contract
from todo_api.connexion_app import App
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


def thing(thing_id: int, limit: int, body: dict[str, Any]) -> dict[str, Any]:
    return {}


def test_each_schema_gets_one_validator_not_one_per_request() -> None:
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "validators", "version": "1"},
        "paths": {
            "/things/{thing_id}": {
                "post": {
                    "operationId": "thing",
                    "parameters": [
                        {"name": "thing_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 9}},
                    ],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
        "components": {"schemas": {"Thing": {"type": "object", "properties": {"name": {"type": "string"}}}}},
    }
    app = App(__name__)
    app.add_api(spec, resolver=Resolver(function_resolver=lambda _: thing), validator_map=validator_map(spec))

    def built_after(requests: int) -> int:
        with app.test_client() as client:
            for number in range(requests):
                for content_type in ("application/json", "application/json; charset=utf-8"):
                    response = client.post(
                        f"/things/{number}?limit=2", content=b'{"name": "x"}', headers={"Content-Type": content_type}
                    )
                    assert response.status_code == 200, response.text
        return len(validation._validators)

    assert built_after(1) == built_after(5)
