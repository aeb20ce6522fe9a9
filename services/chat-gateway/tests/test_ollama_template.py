"""Ollama's Go chat templates, rendered as Ollama renders them for a chat request.

The templates are shaped like those in Ollama's ``template/*.gotmpl`` and its model library; the expected prompts
are what Ollama's ``template.Execute`` (Go's ``text/template``) produces for the same conversation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from modelhub_chat_gateway.domain import ollama_template
from modelhub_chat_gateway.domain.ollama_template import TemplateError, looks_like_go_template, render_ollama_template

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]

# Qwen 2.5's shape: the system prompt first, then the turns; the last one is left open for the answer.
CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
    '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}'
    "{{ end }}\n"
    '{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant\n{{ end }}\n'
    "{{- end }}"
)
# Ollama's llama3-instruct: system messages are turns of .Messages like any other.
LLAMA3 = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
# Ollama's gemma-instruct: Gemma has no system role, so system text opens the next user turn.
GEMMA = (
    '{{- $system := "" }}\n'
    "{{- range .Messages }}\n"
    '{{- if eq .Role "system" }}\n'
    "{{- if not $system }}{{ $system = .Content }}\n"
    '{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}\n'
    "{{- end }}\n"
    "{{- continue }}\n"
    '{{- else if eq .Role "user" }}<start_of_turn>user\n'
    "{{- if $system }}\n"
    "{{ $system }}\n"
    '{{- $system = "" }}\n'
    "{{- end }}\n"
    '{{- else if eq .Role "assistant" }}<start_of_turn>model\n'
    "{{- end }}\n"
    "{{ .Content }}<end_of_turn>\n"
    "{{ end }}<start_of_turn>model\n"
)
# Gemma 3's: the system prompt goes into the first user turn, found by its index (the system message is index 0).
GEMMA3 = (
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if eq .Role "user" }}<start_of_turn>user\n'
    "{{- if and (eq $i 1) $.System }}\n{{ $.System }}\n{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n"
    '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}\n'
    "{{- if $last }}<start_of_turn>model\n{{ end }}\n"
    "{{- end }}"
)
# An old-style template: no .Messages, one exchange at a time.
LEGACY = (
    "{{ if .System }}<|system|>\n{{ .System }}</s>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}</s>\n{{ end }}"
    "<|assistant|>\n{{ .Response }}</s>\n"
)
SMOLLM2_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


ONE = [{"role": "user", "content": "q"}]


def render(source: str, messages: list[dict[str, str]] | None = None) -> str:
    return render_ollama_template(source, CONVERSATION if messages is None else messages)


# ---- real template shapes


def test_chatml_with_messages_ends_at_the_open_assistant_turn() -> None:
    assert render(CHATML) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_continues_an_unfinished_assistant_turn() -> None:
    # A conversation that ends with the assistant is a prefill: the template leaves that turn open.
    messages = [*CONVERSATION, {"role": "assistant", "content": "See you"}]
    assert render(CHATML, messages).endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nSee you")


def test_llama3_shape_keeps_system_messages_among_the_turns() -> None:
    assert render(LLAMA3) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_gemma_shapes_put_the_system_prompt_into_the_first_user_turn() -> None:
    expected_turns = (
        "Hi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render(GEMMA) == "<start_of_turn>user\nBe brief.\n" + expected_turns
    assert render(GEMMA3) == "<start_of_turn>user\nBe brief.\n\n" + expected_turns
    two_systems = [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, *CONVERSATION[1:]]
    # Consecutive system messages are merged into one turn (Ollama's collate) before the template sees them.
    assert render(GEMMA, two_systems).startswith("<start_of_turn>user\nA\n\nB\nHi<end_of_turn>\n")


def test_messages_are_collated_like_ollama() -> None:
    source = "{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}|{{ .System }}"
    messages = [
        {"role": "system", "content": "s1"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": "s2"},
        {"role": "assistant", "content": "c"},
    ]
    assert render(source, messages) == "system=s1;user=a\n\nb;system=s2;assistant=c;|s1\n\ns2"


def test_a_legacy_template_runs_per_exchange_and_the_last_run_stops_at_the_response() -> None:
    assert render(LEGACY) == (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n<|assistant|>\n"
    )


def test_a_legacy_template_without_response_gets_it_appended() -> None:
    assert render("[INST] {{ .Prompt }} [/INST]") == "[INST] Hi [/INST]Hello![INST] Bye [/INST]"


def test_a_legacy_template_sees_each_system_message_with_the_exchange_after_it() -> None:
    source = "{{ if .System }}S:{{ .System }};{{ end }}U:{{ .Prompt }};A:{{ .Response }};"
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "X"},
        {"role": "user", "content": "c"},
    ]
    assert render(source, messages) == "U:a;A:b;S:X;U:c;A:"


def test_a_legacy_final_turn_keeps_the_response_and_drops_what_follows_it() -> None:
    source = "<s>[INST] {{ .Prompt }} [/INST] {{ .Response }}</s>{{ if .System }}never{{ end }}"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "half an answ"}]
    assert render(source, messages) == "<s>[INST] q [/INST] half an answ"


def test_a_template_with_both_shapes_takes_the_messages_branch() -> None:
    source = (
        "{{- if .Messages }}{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}<assistant>"
        "{{- else }}{{ .Prompt }}{{ end }}"
    )
    assert render(source) == "<system>Be brief.<user>Hi<assistant>Hello!<user>Bye<assistant>"


# ---- the language


def test_trim_markers_and_comments() -> None:
    source = "a  \n\t{{- /* gone */ -}}\n  b {{- 1 }} {{- 2 -}}  c{{/* no trim */}} d {{ -3 }}"
    assert render(source, ONE) == "ab12c d -3"


def test_printf_and_print() -> None:
    source = (
        '{{ printf "%s=%d|%5s|%-3d|%03d|%q|%v|%t|%x|%.2f" "n" 3 "r" 7 5 "q\\"" true false 255 3.14159 }}'
        '{{ printf " %d %s" "x" }}{{ print " " 1 2 "a" "b" nil }}{{ println }}'
    )
    assert render(source, ONE) == 'n=3|    r|7  |005|"q\\""|true|false|ff|3.14 %!d(string=x) %!s(MISSING) 1 2ab<nil>\n'


def test_comparisons_and_logic() -> None:
    source = (
        '{{ eq 1 2 1 }} {{ eq "b" "a" "c" }} {{ ne .System "" }} {{ lt 1 2 }} {{ ge "a" "b" }} '
        '{{ and 1 0 }} {{ and 1 "x" }} {{ or "" 0 }} {{ or "" "y" }} {{ not .Prompt }} {{ not (len .Messages) }}'
    )
    assert render(source) == "true false true true false 0 x 0 y true false"


def test_and_or_stop_at_the_first_argument_that_decides() -> None:
    # index would fail out of range; like Go since 1.18 it is never evaluated.
    source = "{{ or (len .Messages) (index .Messages 99) }}|{{ and (eq (len .Messages) 0) (index .Messages 99) }}"
    assert render(source) == "4|false"


def test_range_forms_else_break_continue_and_variables() -> None:
    source = (
        "{{ range .Tools }}tool{{ else }}no tools{{ end }}|"
        "{{ range $i, $m := .Messages }}{{ if eq $i 0 }}{{ continue }}{{ end }}{{ if eq $i 3 }}{{ break }}{{ end }}"
        "{{ $i }}:{{ $m.Role }},{{ end }}|"
        "{{ $n := 0 }}{{ range $m := .Messages }}{{ $n = len $m.Content }}{{ end }}{{ $n }}|"
        "{{ range .Messages }}{{ $.System | len }}{{ end }}"
    )
    assert render(source) == "no tools|1:user,2:assistant,|3|9999"


def test_variables_are_scoped_to_their_block() -> None:
    source = '{{ $x := "outer" }}{{ if true }}{{ $x := "inner" }}{{ $x }} {{ end }}{{ $x }}'
    assert render(source, ONE) == "inner outer"


def test_with_and_else_if_chains() -> None:
    source = (
        "{{ with .System }}[{{ . }}]{{ else }}none{{ end }}|{{ with .Prompt }}{{ . }}{{ else }}no prompt{{ end }}|"
        "{{ with .Messages }}{{ len . }}{{ end }}|"
        "{{ if eq 1 2 }}a{{ else if eq 1 3 }}b{{ else if eq 1 1 }}c{{ else }}d{{ end }}"
    )
    assert render(source) == "[Be brief.]|no prompt|4|c"


def test_literals() -> None:
    source = (
        '{{ "tab\\t\\"q\\" \\u00e9\\x41" }}|{{ `raw\\n` }}|{{ \'a\' }}|{{ 0x1F }}|{{ 017 }}|{{ 1_000 }}|{{ 1.5 }}'
        "|{{ 1e6 }}|{{ print nil }}"
    )
    assert render(source, ONE) == 'tab\t"q" éA|raw\\n|97|31|15|1000|1.5|1e+06|<nil>'


def test_index_slice_len_and_fields() -> None:
    source = (
        '{{ (index .Messages 1).Content }}|{{ index .Messages 2 | printf "%v" }}|{{ len (slice .Messages 1) }}|'
        '{{ slice "héllo" 0 3 }}|{{ len "héllo" }}|{{ index $ "System" }}|{{ $.Messages | len }}'
    )
    # Go strings are bytes: "é" is two of them.
    assert render(source) == "Hi|&{assistant Hello!  [] []  }|3|hé|6|Be brief.|4"


def test_json_is_gos_encoding() -> None:
    source = "{{ json .System }}|{{ index .Messages 1 | json }}|{{ json .Tools }}|{{ toJson 1.5 }}"
    messages = [{"role": "system", "content": '<a> & "b"'}, {"role": "user", "content": "q"}]
    assert render(source, messages) == (
        '"\\u003ca\\u003e \\u0026 \\"b\\""|'
        '{"Role":"user","Content":"q","Thinking":"","Images":null,"ToolCalls":null,"ToolName":"","ToolCallID":""}|'
        "null|1.5"
    )


def test_current_date() -> None:
    before = datetime.now()
    rendered = render("{{ currentDate }} {{ yesterdayDate }}", ONE)
    after = datetime.now()
    days = {moment.strftime("%Y-%m-%d") for moment in (before, after)}
    today, yesterday = rendered.split()
    assert today in days
    assert yesterday in {(moment - timedelta(days=1)).strftime("%Y-%m-%d") for moment in (before, after)}


def test_missing_data_is_go_s_zero_value() -> None:
    # Ollama's data is a map: what it lacks is false and prints "<no value>" (fill-in-middle templates rely on it).
    source = (
        "{{ if .Suffix }}<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}"
        "{{ else }}{{ range .Messages }}{{ .Content }};{{ end }}{{ end }}{{ .Prompt }}"
    )
    assert render(source) == "Be brief.;Hi;Hello!;Bye;<no value>"
    assert render("{{ .Think }}{{ .IsThinkSet }}{{ if .Tools }}tools{{ end }}{{ .Messages | len }}") == "falsefalse4"


# ---- detection


def test_what_looks_like_a_go_template() -> None:
    for source in (CHATML, LLAMA3, GEMMA, GEMMA3, LEGACY, "{{ .Prompt }}", '{{ printf "%s" .Prompt }}', "{{/* hi */}}"):
        assert looks_like_go_template(source), source
    assert not looks_like_go_template(SMOLLM2_JINJA)
    assert not looks_like_go_template("{{ bos_token }}{{ messages[0].content | trim }}")
    assert not looks_like_go_template("plain text, no template at all")


# ---- what is refused


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ if .System }}x", r"line 1: \{\{if\}\} is never closed"),
        ("a\n{{ range .Messages }}\n", r"line 2: \{\{range\}\} is never closed"),
        ("{{ .Prompt ", "unclosed action"),
        ("{{ end }}", r"unexpected \{\{end\}\}"),
        ("{{ foo 1 }}", "function 'foo' not defined"),
        ('{{ html "<b>" }}', "function 'html' is not supported"),
        ('{{ define "x" }}y{{ end }}', r"\{\{define\}\} is not supported"),
        ('{{ template "x" }}', r"\{\{template\}\} is not supported"),
        ('{{ block "x" . }}y{{ end }}', r"\{\{block\}\} is not supported"),
        ("{{ $x }}", "undefined variable '\\$x'"),
        ("{{ break }}", r"\{\{break\}\} outside \{\{range\}\}"),
        ("{{ range .Messages }}{{ .Nope }}{{ end }}", "can't evaluate field Nope"),
        ('{{ eq 1 "a" }}', "incompatible types for comparison"),
        ("{{ index .Messages 9 }}", "index out of range: 9"),
        ("{{ if }}{{ end }}", "missing value for if"),
        ('{{ "open }}', "unterminated quoted string"),
        ("{{ .Prompt | 3 }}", "non executable command"),
    ],
)
def test_what_is_refused_says_what_and_where(source: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        render(source)


def test_a_hostile_template_cannot_run_away() -> None:
    with pytest.raises(TemplateError, match="loops run more than"):
        render("{{ range $.Messages }}" * 9 + "x" + "{{ end }}" * 9)
    with pytest.raises(TemplateError, match="output is longer than"):
        render('{{ range 100000 }}{{ printf "%100s" "" }}{{ end }}')
    with pytest.raises(TemplateError, match="longer than"):
        render('{{ $x := "ab" }}{{ range 64 }}{{ $x = print $x $x }}{{ end }}')
    with pytest.raises(TemplateError, match="too large"):
        render('{{ printf "%999999999d" 1 }}')
    with pytest.raises(TemplateError, match="nests deeper"):
        render("{{ " + "(" * 100 + "1" + ")" * 100 + " }}")
    with pytest.raises(TemplateError, match="larger than"):
        render("x" * (2 << 20))


def test_the_parse_is_cached() -> None:
    source = CHATML + "{{/* cache probe */}}"
    render(source)
    hits = ollama_template._compile.cache_info().hits
    render(source, CONVERSATION[:2])
    assert ollama_template._compile.cache_info().hits == hits + 1
