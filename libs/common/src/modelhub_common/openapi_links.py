"""OpenAPI links from a route that creates something to the routes that use it by the id in its answer, so
that clients (and the stateful fuzzing in ``make test``) can follow "create, then read, change, delete"."""

from __future__ import annotations

from typing import Any

__all__ = ["links_to"]


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
