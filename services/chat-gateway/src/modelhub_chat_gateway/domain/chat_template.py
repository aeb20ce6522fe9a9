"""How a local model's conversation becomes the prompt text it was trained on.

A GGUF run by llama.cpp gets plain text, so the gateway must format the turns itself. The format is taken
from the model, never guessed; the first of these that exists is used:

1. the GGUF's own ``tokenizer.chat_template`` (Jinja, rendered in a sandbox as llama.cpp, Ollama's converter and
   Hugging Face's tokenizers do);
2. the template recorded when the model was pulled or imported (Ollama's Go ``template`` layer, or Jinja);
3. the known format of the model's family (Gemma, whose base GGUFs carry no template);
4. the conversation as plain text, with a warning that says so.

There is no silent Llama-2 (``[INST]``) fallback: a model formatted in a way it was never trained on answers
with nothing, which is worse than a warning the user can act on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelhub_chat_gateway.domain.ollama_template import TemplateError, looks_like_go_template, render_ollama_template

FormatSource = Literal["gguf", "recorded", "family", "raw"]
Message = Mapping[str, str]

#: The GGUF key llama.cpp reads its Jinja template from.
GGUF_TEMPLATE_KEY = "tokenizer.chat_template"


class ChatTemplateError(ValueError):
    """A model's template cannot render this conversation (the message says why)."""


@dataclass(frozen=True)
class PromptFormat:
    """The chosen format of one model: where it came from, how to render it, and what to stop at."""

    source: FormatSource
    #: What the answer's warning event says, when the format is a fallback the user should know about.
    warning: str | None
    #: Strings that end the answer (besides the model's end-of-generation tokens, which llama.cpp stops at).
    stop: tuple[str, ...]
    _render: Callable[[Sequence[Message]], str]

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for ``messages``, ending where the model's answer starts."""
        return self._render(messages)

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.source]


_DESCRIPTIONS: dict[FormatSource, str] = {
    "gguf": "the GGUF's own chat template",
    "recorded": "the template recorded when the model was stored",
    "family": "its family's chat format",
    "raw": "plain text (no chat template)",
}


def choose_format(
    metadata: Mapping[str, str],
    recorded_template: str | None,
    *,
    model: str,
    bos_token: str = "",
    eos_token: str = "",
) -> PromptFormat:
    """The format for a model whose GGUF header is ``metadata`` (llama-cpp-python's ``Llama.metadata``)."""
    stop = (eos_token,) if eos_token else ()
    # Never strip a template: its trailing newline is part of the generation prompt.
    own = metadata.get(GGUF_TEMPLATE_KEY) or ""
    if own.strip():
        return PromptFormat("gguf", None, stop, _jinja_renderer(own, bos_token, eos_token))
    recorded = recorded_template or ""
    if recorded.strip():
        if looks_like_go_template(recorded):
            return PromptFormat("recorded", None, (), functools.partial(_render_go, recorded))
        return PromptFormat("recorded", None, stop, _jinja_renderer(recorded, bos_token, eos_token))
    architecture = metadata.get("general.architecture", "")
    family = _FAMILIES.get(architecture)
    if family is not None:
        render, family_stop = family
        return PromptFormat("family", None, family_stop, render)
    warning = (
        f"'{model}' has no chat template (none in its GGUF, none recorded when it was stored, and no known format "
        f"for its architecture '{architecture or 'unknown'}'), so the conversation was sent as plain text and the "
        "answer may be poor. Store it again with a template (modelhub_puller import-gguf --template), or use a "
        "model whose GGUF carries one."
    )
    return PromptFormat("raw", warning, (), _render_raw)


# ---- Jinja (GGUF and Hugging Face templates)


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


def _tojson(value: Any, indent: int | None = None) -> str:
    # Templates expect plain JSON, not jinja2's HTML-escaped variant.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    environment.filters["tojson"] = _tojson
    try:
        return environment.from_string(source)
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the chat template does not parse: {exc}") from exc


def _jinja_renderer(source: str, bos_token: str, eos_token: str) -> Callable[[Sequence[Message]], str]:
    def render(messages: Sequence[Message]) -> str:
        template = _compile(source)
        plain = [dict(m) for m in messages]
        try:
            return _render_jinja(template, plain, bos_token, eos_token)
        except ChatTemplateError as refused:
            # Some templates refuse a system role (or anything but strict user/assistant alternation): the
            # system prompt then goes at the start of the first user message, as those models' own docs advise.
            merged = _merge_system_into_first_user(plain)
            if merged == plain:
                raise
            try:
                return _render_jinja(template, merged, bos_token, eos_token)
            except ChatTemplateError:
                raise refused from None

    return render


def _render_jinja(template: jinja2.Template, messages: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    try:
        return template.render(
            messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token, tools=None
        )
    except ChatTemplateError:
        raise
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise ChatTemplateError(f"the chat template cannot render this conversation: {exc}") from exc


def _merge_system_into_first_user(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system" and m.get("content"))
    rest = [m for m in messages if m.get("role") != "system"]
    if not system or len(rest) == len(messages):
        return messages
    for n, message in enumerate(rest):
        if message.get("role") == "user":
            rest[n] = {**message, "content": f"{system}\n\n{message.get('content', '')}"}
            return rest
    return [{"role": "user", "content": system}, *rest]


# ---- Ollama's Go templates


def _render_go(source: str, messages: Sequence[Message]) -> str:
    try:
        return render_ollama_template(source, messages)
    except TemplateError as exc:
        raise ChatTemplateError(f"the recorded template cannot render this conversation: {exc}") from exc


# ---- families whose GGUFs carry no template


def _render_gemma(messages: Sequence[Message]) -> str:
    """Gemma's turns; it has no system role, so system text opens the first user turn (as Gemma 3's template does).
    The tokenizer adds ``<bos>`` itself."""
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system" and m.get("content"))
    parts: list[str] = []
    first_user = True
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        content = message.get("content", "").strip()
        if role == "user" and first_user and system:
            content = f"{system}\n\n{content}"
        first_user = first_user and role != "user"
        parts.append(f"<start_of_turn>{'model' if role == 'assistant' else 'user'}\n{content}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts)


_FAMILIES: dict[str, tuple[Callable[[Sequence[Message]], str], tuple[str, ...]]] = {
    "gemma": (_render_gemma, ("<end_of_turn>",)),
    "gemma2": (_render_gemma, ("<end_of_turn>",)),
    "gemma3": (_render_gemma, ("<end_of_turn>",)),
    "gemma3n": (_render_gemma, ("<end_of_turn>",)),
}


def _render_raw(messages: Sequence[Message]) -> str:
    return "\n\n".join(m["content"] for m in messages if m.get("content"))
