"""Every error a route can answer with, declared in the service's OpenAPI document with the shared shape.

FastAPI documents only a route's success status and its own validation error (in a shape the services do
not use). The services answer every error as ``{"error": {"code", "message", "details"?}}``, and some
statuses can come from any route: the request boundary (400, 413, 415, 422), authentication (401),
authorisation (403), a dependency that is down (503, with ``Retry-After``). Others follow from what the
route is: 404 for a route that names something (a path parameter, or ids in its body), 409 for one that
changes something. :func:`document_errors` adds those to each operation, unless the route declared the
status itself, and replaces FastAPI's validation-error schema with the shared one, so that clients
generated from the documents (and the fuzzing in ``make test``) see what the services really answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelhub_common.openapi_links import hoist_body_schemas

__all__ = ["ERROR_SCHEMA", "document_errors"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable, e.g. `invalid_model`"},
                "message": {"type": "string", "description": "what is wrong and what to do next"},
                "details": {
                    "description": "one entry per field at fault, or the ids the error is about",
                    "anyOf": [
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                        {"type": "object"},
                    ],
                },
            },
        }
    },
}

_DESCRIPTIONS = {
    400: "The body or the query cannot be decoded (not UTF-8, not JSON, nested too deeply)",
    401: "No token, or a token that is invalid or expired",
    403: "The caller may not do this",
    404: "Does not exist, or the caller cannot read it",
    409: "Conflicts with the current state (taken id, stale version, still in use)",
    413: "The body, a file or an image is over its limit",
    415: "A content type this route does not take",
    422: "A field is missing or invalid; `details` names it",
    503: "A dependency (the database, NATS, the store) is unavailable; retry after `Retry-After` seconds",
}
_CHANGES = frozenset({"post", "put", "patch", "delete"})
_METHODS = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})


def _statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    codes = [400, 401, 403, 422, 503]
    has_body = "requestBody" in operation
    if "{" in path or has_body:
        codes.append(404)
    if method in _CHANGES:
        codes.append(409)
    if has_body:
        codes += [413, 415]
    return sorted(codes)


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return response


def add_error_responses(schema: dict[str, Any], *, prefix: str = "/api/") -> dict[str, Any]:
    """Adds the error responses to every operation under ``prefix`` of an OpenAPI document (in place)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(prefix):
            continue
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(path, method, operation):
                declared = responses.get(str(status))
                if declared is None or "HTTPValidationError" in str(declared):
                    responses[str(status)] = _error_response(status)
    components = schema["components"]["schemas"]
    if "HTTPValidationError" not in str(schema.get("paths")):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def document_errors(app: FastAPI, *, prefix: str = "/api/") -> None:
    """Makes ``app``'s OpenAPI document declare the errors of every route under ``prefix``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=app.servers,
            )
            app.openapi_schema = add_error_responses(hoist_body_schemas(schema), prefix=prefix)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
