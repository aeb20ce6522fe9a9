"""What FastAPI cannot infer for a route's OpenAPI operation: links from a route that creates something to the
routes that use it by the id in its answer, so that clients (and the stateful fuzzing in ``make test``) can
follow "create, then read, change, delete"; and the schema of a JSON body the route validates itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["hoist_body_schemas", "json_body", "links_to"]

# Where json_body leaves the schemas its body refers to, until hoist_body_schemas moves them.
_SCHEMAS_KEY = "x-modelhub-schemas"


def _pointer(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def links_to(
    status: int, parameter: str, operations: dict[str, tuple[str, str]], *, field: str = "id"
) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` entry: the ``field`` of its ``status`` answer is the ``parameter`` of each
    operation, named by its link name: ``{"GetCollection": ("GET", "/api/v1/knowledge/{knowledge_id}")}``."""
    links = {
        name: {"operationRef": _pointer(path, method.lower()), "parameters": {parameter: f"$response.body#/{field}"}}
        for name, (method, path) in operations.items()
    }
    return {status: {"description": "Created", "links": links}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra=`` entry: its JSON body has ``model``'s schema. For a route that takes the body
    as a plain dict and validates it itself (so that its errors name the fields in the service's own shape):
    without this the document would promise any object."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        _SCHEMAS_KEY: definitions,
    }


def hoist_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Moves the schemas :func:`json_body` bodies refer to into the document's ``components/schemas`` (in
    place; ``document_errors`` calls it on every service's document)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                components.update(operation.pop(_SCHEMAS_KEY, {}))
    return schema
