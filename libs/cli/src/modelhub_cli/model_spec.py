"""Model file bodies from command-line flags and JSON/YAML files, for ``models create`` and ``models edit``.

A file gives the whole body; flags given next to it win, key by key, so one file can serve as a template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelhub_cli.errors import CliError

JsonObject = dict[str, Any]
YAML_SUFFIXES = frozenset({".yaml", ".yml"})


@dataclass(frozen=True)
class ModelFlags:
    """The model fields that have a flag; ``None`` means the flag was not given."""

    id: str | None = None
    base: str | None = None
    name: str | None = None
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    vision: bool | None = None

    def as_document(self) -> JsonObject:
        """The given flags in the API's nested shape (``params.temperature``, ``meta.tags`` ...)."""
        top = {"id": self.id, "base_model_id": self.base, "name": self.name}
        params = {
            "system": self.system,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        meta: JsonObject = {"description": self.description}
        if self.tags:
            meta["tags"] = list(self.tags)
        if self.vision is not None:
            meta["capabilities"] = {"vision": self.vision}
        document: JsonObject = {key: value for key, value in top.items() if value is not None}
        for section, values in (("params", params), ("meta", meta)):
            given = {key: value for key, value in values.items() if value is not None}
            if given:
                document[section] = given
        return document


def read_document(path: Path) -> Any:
    """JSON, or YAML when the name ends in .yaml/.yml (YAML being a superset, it also reads JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text") from exc
    try:
        if path.suffix.lower() in YAML_SUFFIXES:
            return yaml.safe_load(text)
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint="name the file .yaml if it is YAML",
        ) from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc


def read_model_object(path: Path) -> JsonObject:
    """One model: an object, or Open WebUI's one-element export array."""
    document = read_document(path)
    if isinstance(document, list) and len(document) == 1:
        document = document[0]
    if isinstance(document, list):
        raise CliError(
            f"{path} holds {len(document)} models; this command takes one",
            hint="use `modelhub models import FILE` for files with several models",
        )
    if not isinstance(document, dict):
        raise CliError(f"{path} must hold a JSON/YAML object with the model's fields")
    return document


def deep_merge(base: JsonObject, overlay: JsonObject) -> JsonObject:
    merged = dict(base)
    for key, value in overlay.items():
        current = merged.get(key)
        merged[key] = deep_merge(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
    return merged


def create_body(flags: ModelFlags, file: Path | None) -> JsonObject:
    body = deep_merge(read_model_object(file) if file else {}, flags.as_document())
    if not body.get("id"):
        raise CliError("the model needs an id", hint="pass --id, or put `id:` in the --file")
    # Open WebUI names a new model after its id until someone renames it; do the same.
    body.setdefault("name", body["id"])
    return body


def edit_patch(flags: ModelFlags, file: Path | None) -> JsonObject:
    """A JSON merge patch: keys present are set, ``null`` in a file removes a key, absent keys stay."""
    patch = deep_merge(read_model_object(file) if file else {}, flags.as_document())
    if not patch:
        raise CliError("nothing to change", hint="pass a flag such as --name or --temperature, or --file PATCH.yaml")
    return patch
