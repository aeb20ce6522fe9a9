"""Ollama's chat templates (Go ``text/template``), rendered the way Ollama renders them for a chat request.

A model pulled from an Ollama registry carries its chat format as a Go template layer. The local backend
needs it when the GGUF has no Jinja template of its own, so this module interprets the subset of Go templates
those layers use: text and actions with ``{{-``/``-}}`` trimming and comments; fields (``.Role``, ``$.Messages``),
variables (``$x := …``, ``$x = …``); ``if``/``else if``/``else``, ``range`` (with ``$i, $m :=`` and ``else``),
``with``; literals; pipelines and parenthesised calls of ``eq ne lt le gt ge and or not len slice index print
printf json toJson currentDate``. Anything else (``define``, ``template``, ``block``, unknown functions or fields)
is a :class:`TemplateError` naming it: a template is data from a pull, so it can only fail, never run away
(output and loop sizes are capped).

Ollama's rules (its ``template.Execute``): templates that use ``.Messages`` run once, with ``.System`` the
system messages joined and ``.Messages`` the conversation with consecutive same-role messages merged; older
templates (``.System``/``.Prompt``/``.Response`` only) run once per exchange, and the last run stops where
``.Response`` would be written, which is where the model's answer starts.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_OUTPUT_CHARS = 1 << 20
MAX_ITERATIONS = 100_000


class TemplateError(ValueError):
    """The template cannot be parsed or rendered (the message says what and where)."""


def looks_like_go_template(source: str) -> bool:
    """True for Ollama/Go templates (``{{ .Prompt }}``, ``{{ range .Messages }}``), False for Jinja and plain text."""
    if "{%" in source:
        return False
    return re.search(r"\{\{-?\s*(?:[.$]|(?:if|range|with|end|else)\b)", source) is not None


def render_ollama_template(source: str, messages: Sequence[Mapping[str, str]]) -> str:
    """Renders a conversation (``role`` system|user|assistant, ``content``) as Ollama does for a chat request,
    ending where the model's answer should start."""
    tree = _parse(source)
    system, collated = _collate(messages)
    if re.search(r"\.Messages\b", source):
        data = {**_EMPTY_VALUES, "System": system, "Messages": [_message(m) for m in collated]}
        return _Renderer().render(tree, data)
    out = _Renderer()
    system, prompt, response = "", "", ""
    for message in collated:
        role, content = message.get("role"), message.get("content", "")
        if role == "system":
            if prompt or response:
                out.render(tree, {**_EMPTY_VALUES, "System": system, "Prompt": prompt, "Response": response})
                system, prompt, response = "", "", ""
            system = content
        elif role == "user":
            if response:
                out.render(tree, {**_EMPTY_VALUES, "System": system, "Prompt": prompt, "Response": response})
                system, prompt, response = "", "", ""
            prompt = content
        elif role == "assistant":
            response = content
    out.cut_at_response = True
    return out.render(tree, {**_EMPTY_VALUES, "System": system, "Prompt": prompt, "Response": response})


# What Ollama's template data has besides the conversation: empty, so templates that test them take the plain path.
_EMPTY_VALUES: dict[str, Any] = {
    "System": "",
    "Prompt": "",
    "Response": "",
    "Suffix": "",
    "Messages": [],
    "Tools": [],
    "Think": False,
    "ThinkLevel": "",
    "IsThinkSet": False,
}


def _message(m: Mapping[str, str]) -> dict[str, Any]:
    return {
        "Role": m.get("role", ""),
        "Content": m.get("content", ""),
        "Thinking": "",
        "ToolCalls": [],
        "ToolName": "",
        "Images": [],
    }


def _collate(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """System messages joined; consecutive messages of one role merged (as Ollama's ``collate``)."""
    systems: list[str] = []
    collated: list[dict[str, str]] = []
    for message in messages:
        role, content = message.get("role", ""), message.get("content", "")
        if role == "system":
            systems.append(content)
        if collated and collated[-1]["role"] == role:
            collated[-1]["content"] += "\n\n" + content
        else:
            collated.append({"role": role, "content": content})
    return "\n\n".join(systems), collated


# ---- parsing

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*") |
        (?P<raw>`[^`]*`) |
        (?P<number>-?\d+(?:\.\d+)?) |
        (?P<declare>:=) |
        (?P<assign>=) |
        (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*) |
        (?P<field>(?:\.[A-Za-z0-9_]+)+|\.) |
        (?P<ident>[A-Za-z_][A-Za-z0-9_]*) |
        (?P<punct>[()|,])
    )""",
    re.VERBOSE,
)


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    declare: tuple[str, ...]
    assign: bool
    pipeline: list[list[Any]]


@dataclass
class _Block:
    kind: str  # if | range | with
    action: _Action
    body: list[Any] = field(default_factory=list)
    #: if: the else-if branches and the else body; range/with: the else body.
    elifs: list[tuple[_Action, list[Any]]] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class _Control:
    word: str  # break | continue


@functools.lru_cache(maxsize=64)
def _parse(source: str) -> tuple[Any, ...]:
    items: list[tuple[str, Any]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            items.append(("text", text))
        body = match.group(2).strip()
        trim_next = bool(match.group(3))
        position = match.end()
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(("action", body))
    tail = source[position:]
    if trim_next:
        tail = tail.lstrip()
    if "{{" in tail:
        raise TemplateError("an action '{{' is never closed with '}}'")
    if tail:
        items.append(("text", tail))
    nodes, stop, _ = _parse_list(items, 0, ())
    if stop is not None:
        raise TemplateError(f"unexpected {{{{ {stop} }}}}")
    return tuple(nodes)


def _parse_list(items: list[tuple[str, Any]], index: int, stops: tuple[str, ...]) -> tuple[list[Any], str | None, int]:
    """Nodes up to one of ``stops`` (``end``, ``else…``); returns them, the stop word's action and the next index."""
    nodes: list[Any] = []
    while index < len(items):
        kind, value = items[index]
        index += 1
        if kind == "text":
            nodes.append(_Text(value))
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if word not in stops:
                raise TemplateError(f"unexpected {{{{ {value} }}}}")
            return nodes, value, index
        if word in ("if", "range", "with"):
            block = _Block(word, _parse_action(value[len(word) :], allow_declare=word != "if"))
            block.body, stop, index = _parse_list(items, index, ("end", "else"))
            while stop is not None and stop.startswith("else"):
                rest = stop[4:].strip()
                if word == "if" and rest.startswith("if "):
                    branch: list[Any]
                    branch, stop, index = _parse_list(items, index, ("end", "else"))
                    block.elifs.append((_parse_action(rest[3:], allow_declare=False), branch))
                    continue
                if rest:
                    raise TemplateError(f"unsupported {{{{ {stop} }}}}")
                block.otherwise, stop, index = _parse_list(items, index, ("end",))
            if stop != "end":
                raise TemplateError(f"{{{{ {word} }}}} is never closed with {{{{ end }}}}")
            nodes.append(block)
        elif word in ("break", "continue") and value == word:
            nodes.append(_Control(word))
        elif word in ("define", "template", "block"):
            raise TemplateError(f"{{{{ {word} }}}} is not supported in chat templates")
        else:
            nodes.append(_parse_action(value, allow_declare=True))
    if stops:
        raise TemplateError(f"a block is never closed with {{{{ end }}}} (expected {' or '.join(stops)})")
    return nodes, None, index


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise TemplateError(f"cannot read {text[position:]!r} in an action")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _parse_action(text: str, *, allow_declare: bool) -> _Action:
    tokens = _tokens(text)
    declare: tuple[str, ...] = ()
    assign = False
    for n, (kind, _) in enumerate(tokens):
        if kind in ("declare", "assign"):
            names = [v for k, v in tokens[:n] if k == "var"]
            if not allow_declare or not names or len(names) != len([t for t in tokens[:n] if t[0] != "punct"]):
                raise TemplateError(f"a bad variable declaration in {text.strip()!r}")
            declare, assign, tokens = tuple(names), kind == "assign", tokens[n + 1 :]
            break
    pipeline, rest = _parse_pipeline(tokens)
    if rest:
        raise TemplateError(f"unexpected {rest[0][1]!r} in {text.strip()!r}")
    if not pipeline:
        raise TemplateError(f"an empty action {{{{ {text.strip()} }}}}")
    return _Action(declare, assign, pipeline)


def _parse_pipeline(tokens: list[tuple[str, str]]) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    commands: list[list[Any]] = [[]]
    while tokens:
        kind, value = tokens[0]
        if value == ")":
            break
        tokens = tokens[1:]
        if value == "|":
            commands.append([])
        elif value == "(":
            inner, tokens = _parse_pipeline(tokens)
            if not tokens or tokens[0][1] != ")":
                raise TemplateError("a '(' is never closed")
            tokens = tokens[1:]
            commands[-1].append(("pipe", inner))
        elif value == ",":
            raise TemplateError("unexpected ','")
        else:
            commands[-1].append((kind, value))
    return [c for c in commands if c], tokens


# ---- evaluation


class _Cut(Exception):
    """Raised at ``.Response`` in the last legacy run: the answer starts there."""


class _Loop(Exception):
    def __init__(self, word: str) -> None:
        self.word = word


def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


def _printed(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _go_printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values, None)
        if verb == "q":
            return json.dumps(_printed(value))
        if verb == "d" and isinstance(value, int | float):
            return str(int(value))
        return _printed(value)

    return re.sub(r"%([svdq%])", one, fmt)


def _eq(first: Any, *others: Any) -> bool:
    return any(first == other for other in others)


def _slice(value: Any, *bounds: int) -> Any:
    if len(bounds) > 2:
        raise TemplateError("slice takes at most two indexes")
    start = bounds[0] if bounds else 0
    return value[start : bounds[1]] if len(bounds) == 2 else value[start:]


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise TemplateError(f"index {key!r} is out of range") from exc
    return value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not _truth(a),
    "len": len,
    "slice": _slice,
    "index": _index,
    "print": lambda *a: "".join(_printed(v) for v in a),
    "printf": _go_printf,
    "json": lambda v: json.dumps(v, ensure_ascii=False),
    "toJson": lambda v: json.dumps(v, ensure_ascii=False),
    "currentDate": lambda: datetime.now(UTC).strftime("%Y-%m-%d"),
}


class _Renderer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.iterations = 0
        self.cut_at_response = False

    def render(self, tree: Sequence[Any], data: dict[str, Any]) -> str:
        try:
            self._list(tree, data, {"$": data})
        except _Cut:
            pass
        except _Loop as loop:
            raise TemplateError(f"{{{{ {loop.word} }}}} outside a range") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, TemplateError):
                raise
            raise TemplateError(f"the template failed: {exc}") from exc
        return "".join(self.parts)

    def _write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise TemplateError(f"the template writes more than {MAX_OUTPUT_CHARS} characters")
        self.parts.append(text)

    def _list(self, nodes: Sequence[Any], dot: Any, variables: dict[str, Any]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self._write(node.text)
            elif isinstance(node, _Action):
                value = self._pipeline(node.pipeline, dot, variables)
                if node.declare:
                    for name in node.declare:
                        if node.assign and name not in variables:
                            raise TemplateError(f"undefined variable {name}")
                    variables[node.declare[-1]] = value
                else:
                    self._write(_printed(value))
            elif isinstance(node, _Control):
                raise _Loop(node.word)
            else:
                self._block(node, dot, variables)

    def _block(self, block: _Block, dot: Any, variables: dict[str, Any]) -> None:
        scope = dict(variables)
        value = self._pipeline(block.action.pipeline, dot, scope)
        if block.kind == "if":
            self._list(self._branch(block, value, dot, scope), dot, scope)
        elif block.kind == "with":
            if block.action.declare:
                scope[block.action.declare[-1]] = value
            self._list(block.body if _truth(value) else block.otherwise, value if _truth(value) else dot, scope)
        else:
            self._range(block, value, dot, scope)
        # Assignments (=) to outer variables survive the block, as in Go.
        for name in variables:
            variables[name] = scope[name]

    def _branch(self, block: _Block, value: Any, dot: Any, scope: dict[str, Any]) -> list[Any]:
        if _truth(value):
            return block.body
        for action, body in block.elifs:  # evaluated only until one holds, as Go does
            if _truth(self._pipeline(action.pipeline, dot, scope)):
                return body
        return block.otherwise

    def _range(self, block: _Block, value: Any, dot: Any, scope: dict[str, Any]) -> None:
        if isinstance(value, Mapping):
            pairs: list[tuple[Any, Any]] = sorted(value.items())
        elif isinstance(value, list | tuple | str):
            pairs = list(enumerate(value))
        elif value is None:
            pairs = []
        else:
            raise TemplateError(f"range over {type(value).__name__}")
        if not pairs:
            self._list(block.otherwise, dot, scope)
            return
        names = block.action.declare
        for key, item in pairs:
            self.iterations += 1
            if self.iterations > MAX_ITERATIONS:
                raise TemplateError(f"the template loops more than {MAX_ITERATIONS} times")
            if len(names) == 2:
                scope[names[0]], scope[names[1]] = key, item
            elif names:
                scope[names[0]] = item
            try:
                self._list(block.body, item, scope)
            except _Loop as loop:
                if loop.word == "break":
                    break

    def _pipeline(self, commands: list[list[Any]], dot: Any, variables: dict[str, Any]) -> Any:
        value: Any = None
        for n, command in enumerate(commands):
            value = self._command(command, dot, variables, piped=(value,) if n else ())
        return value

    def _command(self, command: list[Any], dot: Any, variables: dict[str, Any], piped: tuple[Any, ...]) -> Any:
        kind, head = command[0]
        if kind == "ident" and head not in ("true", "false", "nil"):
            args = [self._operand(op, dot, variables) for op in command[1:]]
            if head in ("and", "or"):
                return self._logic(head, [*args, *piped])
            function = _FUNCTIONS.get(head)
            if function is None:
                raise TemplateError(f"function {head!r} is not defined")
            try:
                return function(*args, *piped)
            except TemplateError:
                raise
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                raise TemplateError(f"{head} failed: {exc}") from exc
        if len(command) > 1 or piped:
            raise TemplateError(f"{head!r} is not a function and takes no arguments")
        return self._operand(command[0], dot, variables)

    @staticmethod
    def _logic(word: str, args: list[Any]) -> Any:
        if not args:
            raise TemplateError(f"{word} needs arguments")
        for arg in args:
            if _truth(arg) != (word == "and"):
                return arg
        return args[-1]

    def _operand(self, operand: tuple[str, Any], dot: Any, variables: dict[str, Any]) -> Any:
        kind, value = operand
        if kind == "pipe":
            return self._pipeline(value, dot, variables)
        if kind == "string":
            try:
                return json.loads(value)
            except ValueError as exc:
                raise TemplateError(f"a bad string literal {value}") from exc
        if kind == "raw":
            return value[1:-1]
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}.get(value)
        if kind == "field":
            return dot if value == "." else self._fields(dot, value[1:].split("."))
        if kind == "var":
            name, _, path = value.partition(".")
            if name not in variables:
                raise TemplateError(f"undefined variable {name}")
            return self._fields(variables[name], path.split(".")) if path else variables[name]
        raise TemplateError(f"unexpected {value!r}")

    def _fields(self, value: Any, names: list[str]) -> Any:
        for name in names:
            if name == "Response" and self.cut_at_response:
                raise _Cut
            if not isinstance(value, Mapping) or name not in value:
                raise TemplateError(f"can't evaluate field {name}")
            value = value[name]
        return value
