"""The model editor's form: its fields from a registry model file, and a registry body (or merge patch) from
its fields. Numbers that do not parse are sent as typed, so the registry's own validation names the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Form field -> the registry's field path (as its 422 details name it).
FIELD_PATHS = {
    "id": "id",
    "name": "name",
    "base_model_id": "base_model_id",
    "description": "meta.description",
    "system": "params.system",
    "temperature": "params.temperature",
    "top_p": "params.top_p",
    "max_tokens": "params.max_tokens",
    "tags": "meta.tags",
    "suggestions": "meta.suggestion_prompts",
}
NUMBER_FIELDS = {"temperature": float, "top_p": float, "max_tokens": int}


@dataclass
class ModelForm:
    id: str = ""
    name: str = ""
    base_model_id: str = ""
    description: str = ""
    system: str = ""
    temperature: str = ""
    top_p: str = ""
    max_tokens: str = ""
    tags: str = ""
    suggestions: str = ""
    vision: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> ModelForm:
        params = model.get("params") or {}
        meta = model.get("meta") or {}
        prompts = []
        for prompt in meta.get("suggestion_prompts") or []:
            if isinstance(prompt, dict) and prompt.get("content"):
                prompts.append(str(prompt["content"]))
        return cls(
            id=str(model.get("id", "")),
            name=str(model.get("name", "")),
            base_model_id=str(model.get("base_model_id") or ""),
            description=str(meta.get("description") or ""),
            system=str(params.get("system") or ""),
            temperature="" if params.get("temperature") is None else str(params["temperature"]),
            top_p="" if params.get("top_p") is None else str(params["top_p"]),
            max_tokens="" if params.get("max_tokens") is None else str(params["max_tokens"]),
            tags=", ".join(str(t) for t in meta.get("tags") or []),
            suggestions="\n".join(prompts),
            vision=bool((meta.get("capabilities") or {}).get("vision")),
        )

    def _number(self, name: str) -> Any:
        text = str(getattr(self, name)).strip()
        if not text:
            return None
        try:
            return NUMBER_FIELDS[name](text)
        except ValueError:
            return text  # the registry answers 422 naming the field

    def _common(self) -> tuple[dict[str, Any], dict[str, Any]]:
        params = {
            "system": self.system.strip() or None,
            "temperature": self._number("temperature"),
            "top_p": self._number("top_p"),
            "max_tokens": self._number("max_tokens"),
        }
        tags = [t.strip() for t in self.tags.split(",") if t.strip()]
        prompts = [
            {"title": [line.strip()[:60], ""], "content": line.strip()}
            for line in self.suggestions.splitlines()
            if line.strip()
        ]
        meta = {
            "description": self.description.strip() or None,
            "tags": tags,
            "suggestion_prompts": prompts,
            "capabilities": {"vision": self.vision},
        }
        return params, meta

    def create_body(self) -> dict[str, Any]:
        params, meta = self._common()
        return {
            "id": self.id.strip(),
            "name": self.name.strip(),
            "base_model_id": self.base_model_id.strip() or None,
            "params": {k: v for k, v in params.items() if v is not None},
            "meta": {k: v for k, v in meta.items() if v is not None},
        }

    def patch_body(self) -> dict[str, Any]:
        """A JSON merge patch: emptied fields are sent as null, which removes them."""
        params, meta = self._common()
        return {
            "name": self.name.strip(),
            "base_model_id": self.base_model_id.strip() or None,
            "params": params,
            "meta": meta,
        }

    def set_errors(self, by_path: dict[str, str], fallback: str) -> list[str]:
        """Puts each registry problem next to its field; returns those no field of the form shows."""
        paths = {path: name for name, path in FIELD_PATHS.items()}
        unplaced: list[str] = []
        for path, message in by_path.items():
            name = paths.get(path) or paths.get(path.split("[")[0]) or paths.get(".".join(path.split(".")[:2]))
            if name:
                self.errors[name] = message
            else:
                unplaced.append(f"{path}: {message}")
        if not by_path:
            unplaced.append(fallback)
        return unplaced
