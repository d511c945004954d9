"""The examples in openapi.yaml, which Swagger UI and generated docs show as real answers: each one
is valid against its schema, and every documented error shows a problem of its own status, with
the title the service sends for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator

from tests.support import ROOT
from todo_api.problems import OUTCOME_UNKNOWN
from todo_api.problems import body as problem_body

CONTRACT: dict[str, Any] = yaml.safe_load((ROOT / "openapi.yaml").read_text())
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or what its `$ref` (`#/components/…`) points to."""
    while "$ref" in node:
        target: Any = CONTRACT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def example_values(holder: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The examples of a media type or parameter: `example`, and each of `examples`."""
    if "example" in holder:
        yield "example", holder["example"]
    for name, example in holder.get("examples", {}).items():
        yield name, resolve(example)["value"]


def documented_examples() -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """(where, direction, schema, value) for every example of a request body, parameter or response."""
    for path, item in CONTRACT["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            for parameter in map(resolve, [*shared, *operation.get("parameters", [])]):
                for name, value in example_values(parameter):
                    yield f"{where} parameter {parameter['name']} {name}", "request", parameter["schema"], value
            body = resolve(operation.get("requestBody", {}))
            for media, content in body.get("content", {}).items():
                for name, value in example_values(content):
                    yield f"{where} request {media} {name}", "request", content["schema"], value
            for status, response in operation["responses"].items():
                for media, content in resolve(response).get("content", {}).items():
                    for name, value in example_values(content):
                        yield f"{where} {status} {media} {name}", "response", content["schema"], value


def schema_examples(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, value) for every `example` written on a schema under components/schemas."""
    if isinstance(node, dict):
        if "example" in node and isinstance(node.get("type", node.get("$ref")), str):
            yield where, node, node["example"]
        for key, child in node.items():
            if key != "example":
                yield from schema_examples(child, f"{where}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from schema_examples(child, f"{where}/{index}")


def errors_of(schema: dict[str, Any], value: Any, direction: str) -> list[str]:
    validator = OAS30WriteValidator if direction == "request" else OAS30ReadValidator
    # The schema inside a document that has the contract's components, so that its `$ref`s resolve.
    document = {"components": CONTRACT["components"], "allOf": [schema]}
    return [error.message for error in validator(document).iter_errors(value)]


EXAMPLES = list(documented_examples())
ERROR_RESPONSES = [
    (f"{method.upper()} {path} {status}", int(status), resolve(response))
    for path, item in CONTRACT["paths"].items()
    for method, operation in item.items()
    if method in METHODS
    for status, response in operation["responses"].items()
    if int(status) >= 400
]


@pytest.mark.parametrize(("where", "direction", "schema", "value"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_documented_example_is_valid_against_its_schema(
    where: str, direction: str, schema: dict[str, Any], value: Any
) -> None:
    assert errors_of(schema, value, direction) == [], f"{where}: {json.dumps(value)}"


def test_every_schema_level_example_is_valid_against_its_schema() -> None:
    found = list(schema_examples(CONTRACT["components"]["schemas"], "#/components/schemas"))
    assert found, "the contract has no schema-level example any more: drop this test"
    invalid = {where: errors_of(schema, value, "response") for where, schema, value in found}
    assert {where: errors for where, errors in invalid.items() if errors} == {}


@pytest.mark.parametrize(("where", "status", "response"), ERROR_RESPONSES, ids=[e[0] for e in ERROR_RESPONSES])
def test_every_error_response_shows_a_problem_of_its_own_status(
    where: str, status: int, response: dict[str, Any]
) -> None:
    problems = [value for _, value in example_values(response["content"]["application/problem+json"])]
    assert problems, f"{where} has no example"
    for problem in problems:
        assert problem["type"] in ("about:blank", OUTCOME_UNKNOWN), f"{where}: a type the service never sends"
        sent = json.loads(problem_body(status, problem["detail"], problem.get("errors"), problem["type"]))
        assert problem == sent, f"{where}: the service would send {sent}"
        assert ("errors" in problem) == (status == 422), f"{where}: `errors` belongs to 422s, and every 422 has it"
