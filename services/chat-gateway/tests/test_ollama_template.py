"""Ollama's Go chat templates, rendered as Ollama renders them for a chat request."""

from __future__ import annotations

import pytest

from modelhub_chat_gateway.domain.ollama_template import TemplateError, looks_like_go_template, render_ollama_template

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]
# Shaped like Ollama's qwen/ChatML templates: the system prompt first, then the turns, the last one open.
CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
    '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}'
    "{{ end }}"
    '{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant\n{{ end }}{{- end }}'
)
LLAMA3 = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    '{{- range .Messages }}{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
    "{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
GEMMA = (
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{- if eq .Role "user" }}<start_of_turn>user\n{{ if and (eq $i 1) $.System }}{{ $.System }}\n\n{{ end }}'
    "{{ .Content }}<end_of_turn>\n"
    '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}'
    "{{- if $last }}<start_of_turn>model\n{{ end }}{{- end }}"
)
LEGACY = (
    "{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}</s>\n{{ end }}"
    "<|assistant|>\n{{ .Response }}</s>\n"
)


def test_chatml_with_messages_ends_at_the_open_assistant_turn() -> None:
    assert render_ollama_template(CHATML, CONVERSATION) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_and_gemma_shapes() -> None:
    assert render_ollama_template(LLAMA3, CONVERSATION) == (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert render_ollama_template(GEMMA, CONVERSATION) == (
        "<start_of_turn>user\nS\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_legacy_template_runs_per_exchange_and_the_last_run_stops_at_the_response() -> None:
    assert render_ollama_template(LEGACY, CONVERSATION) == (
        "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|user|>\nBye</s>\n<|assistant|>\n"
    )
    # Consecutive messages of one role are merged, as Ollama collates them.
    merged = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert render_ollama_template(LEGACY, merged) == "<|user|>\na\n\nb</s>\n<|assistant|>\n"


def test_trimming_comments_functions_and_range_else() -> None:
    source = (
        '{{/* a comment */}}x  {{- printf "%s=%d" "n" 3 -}}  y|{{ range .Tools }}t{{ else }}none{{ end }}'
        '|{{ or "" "b" }}|{{ and 1 0 }}|{{ eq 1 2 1 }}|{{ not .Tools }}|{{ len .Messages }}|{{ `raw` }}'
        "|{{ .Messages | len }}|{{ index .Messages 0 | json }}"
    )
    rendered = render_ollama_template(source, [{"role": "user", "content": "q"}])
    assert rendered.startswith("xn=3y|none|b|0|true|true|1|raw|1|")
    assert '"Role": "user"' in rendered and '"Content": "q"' in rendered


def test_what_looks_like_a_go_template() -> None:
    for source in (CHATML, LLAMA3, GEMMA, LEGACY, "{{ .Prompt }}"):
        assert looks_like_go_template(source)
    smollm2 = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    assert not looks_like_go_template(smollm2)
    assert not looks_like_go_template("plain text")


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ if .System }}x", "never closed"),
        ("{{ foo 1 }}", "'foo' is not defined"),
        ('{{ define "x" }}y{{ end }}', "define"),
        ("{{ .Nope }}", "field Nope"),
        ("{{ end }}", "unexpected"),
        ("{{ .System", "never closed"),
    ],
)
def test_what_is_refused_says_what(source: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        render_ollama_template(source, [{"role": "user", "content": "q"}])


def test_a_hostile_template_cannot_run_away() -> None:
    nested = "{{ range $.Messages }}" * 6 + "{{ range $.Messages }}x{{ end }}" + "{{ end }}" * 6
    with pytest.raises(TemplateError, match="more than"):
        render_ollama_template(nested, _alternating(20))


def _alternating(count: int) -> list[dict[str, str]]:
    return [{"role": "user" if n % 2 == 0 else "assistant", "content": str(n)} for n in range(count)]
