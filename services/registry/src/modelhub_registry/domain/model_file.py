"""Model files: a base model plus a system prompt, parameters and metadata.

Field names follow Open WebUI's so its files import as they are; the tool/filter/action lists are
snake_case here and accept Open WebUI's camelCase (``toolIds``) on input. Unknown keys in ``params`` and
``meta`` are kept as given.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from modelhub_registry.domain.limits import Limits

# Printable characters without whitespace; ids such as "llama3.1:8b" or "hf.co/user/repo:Q4_K_M" are valid.
MODEL_ID_RE = re.compile(r"[!-~\u00a1-\U0010ffff]+")  # fullmatch: "$" would let a final newline in
ID_RULE = "must be printable characters without whitespace, with no '.' or '..' path segment"
#: :func:`id_problem`'s rule as a JSON-schema pattern, for the documents: MODEL_ID_RE's characters, no "." or
#: ".." segment; it ends with "(?![\s\S])", not "$", which Python also matches before a final newline.
ID_PATTERN = "^(?!\\.\\.?(?:/|$))(?!.*/\\.\\.?(?:/|$))[!-~\u00a1-\U0010ffff]+(?![\\s\\S])"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a usable model id (Open WebUI's rule, made safe for URLs, export file names and S3
    keys), or None."""
    if not value:
        return "must not be empty"
    if not MODEL_ID_RE.fullmatch(value) or any(segment in (".", "..") for segment in value.split("/")):
        return ID_RULE
    return None


# Params Open WebUI keeps for itself and never sends to a backend.
UI_ONLY_PARAMS = frozenset({"function_calling", "stream_response", "reasoning_tags", "custom_params"})


class FieldProblem(BaseModel):
    field: str
    message: str


def _none_to_list(value: Any) -> Any:
    return [] if value is None else value


def _tags(value: Any) -> Any:
    """Tags arrive as ``["a"]`` or ``[{"name": "a"}]``; stored as plain strings, trimmed and de-duplicated."""
    if value is None:
        return []
    if not isinstance(value, list):
        return value
    names: list[Any] = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str):
            name = name.strip()
            if name and name not in names:
                names.append(name)
        else:
            names.append(name)
    return names


def _stop(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ModelParams(BaseModel):
    """Sampling parameters and the system prompt. Known keys are checked; others are kept as given."""

    model_config = ConfigDict(extra="allow")

    system: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=10_000_000)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: Annotated[list[str] | None, BeforeValidator(_stop)] = None
    num_ctx: int | None = Field(None, ge=1, le=10_000_000)
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def as_dict(self) -> dict[str, Any]:
        """Only the keys that are set, unknown keys included."""
        return self.model_dump(exclude_none=True)


class SuggestionPrompt(BaseModel):
    """``title`` is ``[title, subtitle]`` (Open WebUI ≥ 0.5), a plain string in older files, or absent."""

    model_config = ConfigDict(extra="allow")

    title: list[str] | str | None = None
    content: str


class KnowledgeRef(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    name: str | None = None
    type: Literal["collection", "file"] = "collection"


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="allow")

    vision: bool = False
    file_upload: bool | None = None
    citations: bool | None = None
    usage: bool | None = None


class ModelMeta(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    description: str | None = None
    profile_image_url: str | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    suggestion_prompts: Annotated[list[SuggestionPrompt], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    tags: Annotated[list[str], BeforeValidator(_tags)] = Field(default_factory=list)
    knowledge: Annotated[list[KnowledgeRef], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    tool_ids: Annotated[list[str], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, validation_alias="toolIds", serialization_alias="toolIds"
    )
    filter_ids: Annotated[list[str], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, validation_alias="filterIds", serialization_alias="filterIds"
    )
    default_filter_ids: Annotated[list[str], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, validation_alias="defaultFilterIds", serialization_alias="defaultFilterIds"
    )
    action_ids: Annotated[list[str], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, validation_alias="actionIds", serialization_alias="actionIds"
    )

    @property
    def knowledge_ids(self) -> list[str]:
        return [k.id for k in self.knowledge]


Permission = Literal["read", "write"]
PrincipalType = Literal["user", "group"]


class Grant(BaseModel):
    principal_type: PrincipalType
    principal_id: str = Field(min_length=1, max_length=256)
    permission: Permission


class Access(BaseModel):
    """Private by default: only the owner and admins. ``public_read`` lets every user read."""

    public_read: bool = False
    grants: list[Grant] = Field(default_factory=list)


class ModelFileSpec(BaseModel):
    """What a client sends to create or replace a model file."""

    model_config = ConfigDict(extra="ignore")

    # The id rule is checked by check_limits (with the settings' lengths), in the service's error shape; the
    # pattern states it in the OpenAPI document.
    id: str = Field(json_schema_extra={"pattern": ID_PATTERN})
    base_model_id: str | None = Field(None, json_schema_extra={"pattern": ID_PATTERN})
    name: str = Field(json_schema_extra={"minLength": 1})
    params: ModelParams = Field(default_factory=ModelParams)
    meta: ModelMeta = Field(default_factory=ModelMeta)
    hidden: bool = False
    enabled: bool = True
    access: Access = Field(default_factory=Access)


class ModelFile(ModelFileSpec):
    """A stored model file."""

    owner_id: str
    created_at: datetime
    updated_at: datetime
    version: int


def check_limits(spec: ModelFileSpec, limits: Limits) -> list[FieldProblem]:
    """What pydantic types cannot say: lengths and counts from settings, and the id's shape."""
    problems: list[FieldProblem] = []

    def too_long(field: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            problems.append(FieldProblem(field=field, message=f"is {len(value)} characters; the limit is {limit}"))

    if (problem := id_problem(spec.id)) is not None:
        problems.append(FieldProblem(field="id", message=problem))
    too_long("id", spec.id, limits.max_id_length)
    if spec.base_model_id is not None and (problem := id_problem(spec.base_model_id)) is not None:
        problems.append(FieldProblem(field="base_model_id", message=problem))
    if not spec.name.strip():
        problems.append(FieldProblem(field="name", message="must not be empty"))
    too_long("name", spec.name, limits.max_name_length)
    too_long("params.system", spec.params.system, limits.max_system_prompt_length)
    too_long("meta.description", spec.meta.description, limits.max_description_length)
    if spec.params.stop is not None and len(spec.params.stop) > limits.max_stop_sequences:
        problems.append(
            FieldProblem(field="params.stop", message=f"has more than {limits.max_stop_sequences} sequences")
        )
    if len(spec.meta.tags) > limits.max_tags:
        problems.append(
            FieldProblem(field="meta.tags", message=f"has {len(spec.meta.tags)} tags; the limit is {limits.max_tags}")
        )
    for i, tag in enumerate(spec.meta.tags):
        too_long(f"meta.tags[{i}]", tag, limits.max_tag_length)
    if len(spec.meta.suggestion_prompts) > limits.max_suggestions:
        problems.append(
            FieldProblem(
                field="meta.suggestion_prompts",
                message=f"has {len(spec.meta.suggestion_prompts)}; the limit is {limits.max_suggestions}",
            )
        )
    for i, prompt in enumerate(spec.meta.suggestion_prompts):
        too_long(f"meta.suggestion_prompts[{i}].content", prompt.content, limits.max_suggestion_length)
    for field, refs in (
        ("meta.knowledge", spec.meta.knowledge),
        ("meta.tool_ids", spec.meta.tool_ids),
        ("meta.filter_ids", spec.meta.filter_ids),
        ("meta.action_ids", spec.meta.action_ids),
        ("access.grants", spec.access.grants),
    ):
        if len(refs) > limits.max_refs:
            problems.append(FieldProblem(field=field, message=f"has more than {limits.max_refs} entries"))
    params_size = len(json.dumps(spec.params.as_dict(), default=str))
    if params_size > limits.max_params_bytes:
        problems.append(
            FieldProblem(field="params", message=f"is {params_size} bytes; the limit is {limits.max_params_bytes}")
        )
    meta_size = len(json.dumps(spec.meta.model_dump(exclude={"profile_image_url"}), default=str))
    if meta_size > limits.max_meta_bytes:
        problems.append(
            FieldProblem(field="meta", message=f"is {meta_size} bytes; the limit is {limits.max_meta_bytes}")
        )
    return problems
