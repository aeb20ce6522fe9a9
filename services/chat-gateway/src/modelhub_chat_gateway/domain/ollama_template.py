"""Ollama's chat templates: a small interpreter for the Go ``text/template`` subset they are written in.

Ollama stores each model's chat format as a Go template (the ``application/vnd.ollama.image.template`` layer).
When a GGUF carries no Jinja ``tokenizer.chat_template``, that template is the only faithful record of how the
model was trained to see a conversation, so the gateway renders it itself, the way Ollama's
``template.(*Template).Execute`` does for a chat request:

* a template that mentions ``.Messages`` runs once, with ``.System`` (every system message's text) and
  ``.Messages`` (the whole conversation, system messages included, consecutive turns of one role merged);
* an older template (``.System``, ``.Prompt`` and ``.Response`` only) runs once per exchange and the runs are
  concatenated; the last run is cut right after ``{{ .Response }}``, so the prompt ends where the answer starts.

The language: text and actions with ``{{-``/``-}}`` trimming and ``{{/* */}}`` comments; fields, ``$`` and
variables (``:=``, ``=``); string, raw-string, character, number, boolean and ``nil`` literals; parenthesised
pipelines and ``|``; ``if``/``else if``/``else``, ``range`` (with ``else``, ``break`` and ``continue``),
``with``/``else with``; Go's builtin functions except ``call``, ``html``, ``js`` and ``urlquery``; Ollama's
``json``, ``currentDate``, ``yesterdayDate`` and ``toTypeScriptType``, and ``toJson`` as an alias of ``json``.
``define``, ``template``, ``block`` and any other function are refused with :class:`TemplateError`. A template is
data that came with a pull, so its size, output, nesting, loops and work are bounded.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum, auto
from typing import NamedTuple

__all__ = ["TemplateError", "looks_like_go_template", "render_ollama_template"]

#: Limits for a template that came from somewhere else: real chat templates are a few KiB and render in
#: hundreds of steps, so these only stop hostile or broken ones.
_MAX_SOURCE = 1 << 20
_MAX_OUTPUT = 1 << 20
_MAX_ITERATIONS = 100_000
_MAX_STEPS = 1_000_000
_MAX_NESTING = 64


class TemplateError(ValueError):
    """The template cannot be parsed or rendered (message says what and where)."""


class _Failure(Exception):
    """A rendering error not yet placed: the renderer adds the line it was working on."""


# ---- detection

_JINJA_TAG = re.compile(r"\{%|\{#")
# An action that opens like Go's and never like Jinja's: a field, a variable, a comment, or a Go keyword.
_GO_ACTION = re.compile(
    r"\{\{-?\s*(?:/\*|[.$]|(?:if|range|with|else|end|define|template|block|break|continue)(?![\w'\"(\[]))"
)
# A field somewhere inside an action (`{{ printf "%s" .Prompt }}`); Jinja's `.` follows a name, a bracket or quote.
_GO_FIELD = re.compile(r"\{\{[^{}]*?[\s(|]\.[A-Za-z_]")


def looks_like_go_template(source: str) -> bool:
    """True for Ollama/Go templates (`{{ .Prompt }}`, `{{ range .Messages }}`, `{{- if .System }}` …), False for Jinja
    (`{% for message in messages %}`, `{{ message['content'] }}`) and for plain text."""
    if _GO_ACTION.search(source):
        return True
    return not _JINJA_TAG.search(source) and _GO_FIELD.search(source) is not None


# ---- values
#
# Go values map onto Python ones: string -> str, int -> int, float64 -> float, bool -> bool, nil -> None, slices ->
# tuple, the data map -> dict, Ollama's message struct -> _Message.


class _NilSlice(tuple[object, ...]):
    """A Go nil slice: empty and false like any empty slice, but ``null`` in JSON."""

    __slots__ = ()
    go_str = "[]"
    go_type = "[]interface {}"


class _NilTools(_NilSlice):
    """Ollama's empty tool list, whose ``String`` method prints its JSON."""

    __slots__ = ()
    go_str = "null"
    go_type = "template.templateTools"


@dataclass(frozen=True, eq=False)
class _Message:
    """Ollama's ``templateMessage``: what ``.Messages`` holds (field names as templates spell them)."""

    Role: str
    Content: str
    Thinking: str = ""
    Images: tuple[object, ...] = _NilSlice()
    ToolCalls: tuple[object, ...] = _NilSlice()
    ToolName: str = ""
    ToolCallID: str = ""


_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(_Message))
_MISSING = object()  # "no value yet" (a pipeline's first command has no piped-in argument); never data


def _go_type(value: object) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _NilSlice):
        return value.go_type
    if isinstance(value, tuple):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, _Message):
        return "*template.templateMessage"
    return type(value).__name__


def _truth(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return value != 0
    if isinstance(value, str | tuple | dict):
        return len(value) > 0
    return True


def _go_bytes(text: str) -> bytes:
    # Go strings are bytes; `surrogateescape` keeps bytes that Go escapes (\xff) made, `replace` covers the rest.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _from_go_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _valid_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _go_bytes(text).decode("utf-8", "replace")
    return text


def _bounded(text: str) -> str:
    if len(text) > _MAX_OUTPUT:
        raise _Failure(f"a value is longer than the {_MAX_OUTPUT >> 20} MiB the template may write")
    return text


# ---- Go's formatting (fmt and encoding/json)


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``value`` (> 0) and where the point goes (Go's ``decimal``)."""
    parts = Decimal(repr(value)).as_tuple()
    assert isinstance(parts.exponent, int)
    digits = "".join(map(str, parts.digits))
    point = len(digits) + parts.exponent
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0") or "0", point


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _scientific(digits: str, point: int, min_exponent_digits: int) -> str:
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):0{min_exponent_digits}d}"


def _go_float(value: float) -> str:
    """``%v`` of a (finite: templates have no arithmetic) float64: the shortest digits, in exponent form below 1e-4
    and from 1e6 up (``%g``'s rule)."""
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(abs(value))
    if point - 1 < -4 or point - 1 >= 6:
        return sign + _scientific(digits, point, 2)
    return sign + _fixed(digits, point)


def _fmt_v(value: object) -> str:
    """``fmt.Sprint`` of one operand."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, _NilSlice):
        return value.go_str
    if isinstance(value, tuple):
        return "[" + " ".join(_fmt_v(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{_fmt_v(k)}:{_fmt_v(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, _Message):
        return "&{" + " ".join(_fmt_v(getattr(value, name)) for name in _MESSAGE_FIELDS) + "}"
    return str(value)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(text: str, quote: str = '"') -> str:
    """``strconv.Quote`` (or ``QuoteRune`` with ``quote="'"``)."""
    out = [quote]
    for char in text:
        code = ord(char)
        if char in (quote, "\\"):
            out.append("\\" + char)
        elif char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")  # a raw byte from a Go escape
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(quote)
    return "".join(out)


def _json_string(text: str) -> str:
    # Go's encoder escapes HTML's special characters and the two JavaScript line separators.
    encoded = json.dumps(_valid_text(text), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        encoded = encoded.replace(char, escape)
    return encoded.replace("\u2029", "\\u2029")


def _go_json(value: object) -> str:
    """``json.Marshal`` of a template value."""
    if value is None or isinstance(value, _NilSlice):
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "-0" if math.copysign(1, value) < 0 else "0"
        digits, point = _shortest_digits(abs(value))
        sign = "-" if value < 0 else ""
        if abs(value) < 1e-6 or abs(value) >= 1e21:
            return sign + _scientific(digits, point, 1)
        return sign + _fixed(digits, point)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, tuple):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_string(str(k))}:{_go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, _Message):
        fields = (f"{_json_string(name)}:{_go_json(getattr(value, name))}" for name in _MESSAGE_FIELDS)
        return "{" + ",".join(fields) + "}"
    raise TypeError(f"json: unsupported type {_go_type(value)}")


def _pad(head: str, body: str, width: int | None, flags: str, zeros: bool = True) -> str:
    size = len(head) + len(body)
    if width is None or size >= width:
        return head + body
    if "-" in flags:
        return head + body + " " * (width - size)
    if zeros and "0" in flags:
        return head + "0" * (width - size) + body
    return " " * (width - size) + head + body


def _sign(negative: bool, flags: str) -> str:
    if negative:
        return "-"
    return "+" if "+" in flags else " " if " " in flags else ""


def _bad_verb(verb: str, value: object) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={_fmt_v(value)})"


def _format_int(value: int, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    if verb == "c":
        return _pad("", chr(value) if 0 <= value <= 0x10FFFF else "\ufffd", width, flags)
    if verb == "q":
        return _pad("", _go_quote(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd", "'"), width, flags)
    if verb == "U":
        return _pad("", f"U+{value:04X}", width, flags)
    spec = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(verb)
    if spec is None:
        return _bad_verb(verb, value)
    digits = format(abs(value), spec)
    if precision is not None:
        digits = "" if precision == 0 and value == 0 else digits.rjust(precision, "0")
    prefix = ""
    if verb == "O":
        prefix = "0o"
    elif "#" in flags:
        prefix = {"b": "0b", "x": "0x", "X": "0X", "o": "" if digits.startswith("0") else "0"}.get(verb, "")
    return _pad(_sign(value < 0, flags) + prefix, digits, width, flags, zeros=precision is None)


def _format_float(value: float, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    if verb not in "vgGeEfF":
        return _bad_verb(verb, value)
    negative = math.copysign(1, value) < 0
    if verb in "vgG" and precision is None:
        body = _go_float(abs(value))
        body = body.upper() if verb == "G" else body
    else:
        body = format(abs(value), f".{6 if precision is None else precision}{'g' if verb == 'v' else verb}")
    return _pad(_sign(negative, flags), body, width, flags)


def _format_verb(verb: str, value: object, flags: str, width: int | None, precision: int | None) -> str:
    if verb == "T":
        return _pad("", _go_type(value), width, flags, zeros=False)
    if value is None:
        return _pad("", "<nil>", width, flags, zeros=False) if verb == "v" else _bad_verb(verb, value)
    if isinstance(value, bool):
        if verb not in "tv":
            return _bad_verb(verb, value)
        return _pad("", "true" if value else "false", width, flags, zeros=False)
    if isinstance(value, int):
        return _format_int(value, verb, flags, width, precision)
    if isinstance(value, float):
        return _format_float(value, verb, flags, width, precision)
    if isinstance(value, str):
        if verb in "sv":
            return _pad("", value if precision is None else value[:precision], width, flags)
        if verb == "q":
            return _pad("", _go_quote(value if precision is None else value[:precision]), width, flags)
        if verb in "xX":
            hexed = _go_bytes(value if precision is None else value[:precision]).hex()
            return _pad("", hexed.upper() if verb == "X" else hexed, width, flags)
        return _bad_verb(verb, value)
    if isinstance(value, _NilSlice) and verb in "sv":
        return _pad("", value.go_str, width, flags, zeros=False)
    if isinstance(value, tuple):
        return "[" + " ".join(_format_verb(verb, item, flags, width, precision) for item in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{_format_verb(verb, k, flags, width, precision)}:{_format_verb(verb, value[k], flags, width, precision)}"
            for k in sorted(value)
        )
        return "map[" + " ".join(items) + "]"
    if isinstance(value, _Message):
        fields = (_format_verb(verb, getattr(value, name), flags, width, precision) for name in _MESSAGE_FIELDS)
        return "&{" + " ".join(fields) + "}"
    return _bad_verb(verb, value)


_PRINTF_SPEC = re.compile(r"([-+# 0]*)(?:\[(\d+)\])?(\*|\d+)?(?:\.(?:\[(\d+)\])?(\*|\d*))?(?:\[(\d+)\])?")


def _sprintf(template: str, args: Sequence[object]) -> str:
    """``fmt.Sprintf``: flags, width, precision, ``*`` and ``[n]`` argument indexes, and Go's error notes."""
    out: list[str] = []
    position = 0
    next_arg = 0
    reordered = False

    def take(index: str | None) -> object:
        nonlocal next_arg, reordered
        if index is not None:
            reordered = True
            next_arg = int(index) - 1
        if not 0 <= next_arg < len(args):
            return _MISSING
        next_arg += 1
        return args[next_arg - 1]

    def star(index: str | None) -> int | None:
        value = take(index)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_OUTPUT:
            return value
        return None

    while position < len(template):
        percent = template.find("%", position)
        if percent < 0:
            out.append(template[position:])
            break
        out.append(template[position:percent])
        spec = _PRINTF_SPEC.match(template, percent + 1)
        assert spec is not None  # every part of the pattern is optional
        flags, width_index, width_text, precision_index, precision_text, verb_index = spec.groups()
        position = spec.end()
        # An index not followed by "*" picks the verb's argument ("%[2]d").
        if width_text != "*" and width_index is not None:
            verb_index, width_index = verb_index or width_index, None
        if precision_text != "*" and precision_index is not None:
            verb_index, precision_index = verb_index or precision_index, None
        width: int | None = None
        precision: int | None = None
        if width_text == "*":
            width = star(width_index)
            if width is None:
                out.append("%!(BADWIDTH)")
            elif width < 0:
                flags, width = flags + "-", -width
        elif width_text:
            width = int(width_text)
        if precision_text == "*":
            precision = star(precision_index)
            if precision is None or precision < 0:
                out.append("%!(BADPREC)")
                precision = None
        elif precision_text is not None:
            precision = int(precision_text or "0")
        if (width or 0) > _MAX_OUTPUT or (precision or 0) > _MAX_OUTPUT:
            raise _Failure("printf width or precision is too large")
        if position >= len(template):
            out.append("%!(NOVERB)")
            break
        verb = template[position]
        position += 1
        if verb == "%":
            out.append("%")
            continue
        value = take(verb_index)
        out.append(f"%!{verb}(MISSING)" if value is _MISSING else _format_verb(verb, value, flags, width, precision))
    if not reordered and next_arg < len(args):
        extra = ("<nil>" if a is None else f"{_go_type(a)}={_fmt_v(a)}" for a in args[next_arg:])
        out.append("%!(EXTRA " + ", ".join(extra) + ")")
    return "".join(out)


# ---- lexing


class _K(Enum):
    TEXT = auto()
    LEFT = auto()
    RIGHT = auto()
    SPACE = auto()
    FIELD = auto()
    VARIABLE = auto()
    DOT = auto()
    IDENT = auto()
    KEYWORD = auto()
    BOOL = auto()
    NIL = auto()
    STRING = auto()
    NUMBER = auto()
    LPAREN = auto()
    RPAREN = auto()
    PIPE = auto()
    DECLARE = auto()
    ASSIGN = auto()
    COMMA = auto()
    EOF = auto()


class _Token(NamedTuple):
    kind: _K
    text: str
    line: int
    value: object = None


_SPACES = " \t\r\n"
_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"})
_TERMINATORS = frozenset(_SPACES + ".,|:()")
_ASCII_DIGITS = frozenset("0123456789")
_DIGITS = {8: "01234567", 16: "0123456789abcdefABCDEF"}
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]*)?|0[oO][0-7_]*|0[bB][01_]*"
    r"|[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]*)?)i?"
)


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or char.isdecimal()


class _Lexer:
    """Go's lexer: text, delimiters with trim markers, comments, and the tokens inside actions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0
        self.tokens: list[_Token] = []
        self._newlines = [i for i, char in enumerate(source) if char == "\n"]

    def line(self, pos: int | None = None) -> int:
        return bisect.bisect_left(self._newlines, self.pos if pos is None else pos) + 1

    def fail(self, message: str, pos: int | None = None) -> TemplateError:
        return TemplateError(f"template line {self.line(pos)}: {message}")

    def run(self) -> list[_Token]:
        source = self.source
        trim_text = False
        while True:
            start = source.find("{{", self.pos)
            text = source[self.pos :] if start < 0 else source[self.pos : start]
            left_trim = start >= 0 and self._left_trim_at(start + 2)
            if trim_text:
                text = text.lstrip(_SPACES)
            if left_trim:
                text = text.rstrip(_SPACES)
            if text:
                self.tokens.append(_Token(_K.TEXT, text, self.line()))
            if start < 0:
                self.tokens.append(_Token(_K.EOF, "", self.line(len(source))))
                return self.tokens
            self.pos = start + 2 + (2 if left_trim else 0)
            if source.startswith("/*", self.pos):
                trim_text = self._comment(start)
            else:
                self.tokens.append(_Token(_K.LEFT, "{{", self.line(start)))
                trim_text = self._action(start)

    def _left_trim_at(self, pos: int) -> bool:
        return self.source.startswith("-", pos) and pos + 1 < len(self.source) and self.source[pos + 1] in _SPACES

    def _right_delim(self) -> tuple[bool, bool]:
        """Whether the action ends here, and whether with a trim marker (`` -}}``)."""
        source, pos = self.source, self.pos
        if pos < len(source) and source[pos] in _SPACES and source.startswith("-}}", pos + 1):
            return True, True
        return source.startswith("}}", pos), False

    def _comment(self, start: int) -> bool:
        end = self.source.find("*/", self.pos + 2)
        if end < 0:
            raise self.fail("unclosed comment", start)
        self.pos = end + 2
        at_delim, trim = self._right_delim()
        if not at_delim:
            raise self.fail("comment ends before closing delimiter", start)
        self.pos += 4 if trim else 2
        return trim

    def _emit(self, kind: _K, start: int, value: object = None) -> None:
        self.tokens.append(_Token(kind, self.source[start : self.pos], self.line(start), value))

    def _at_terminator(self) -> bool:
        return (
            self.pos >= len(self.source)
            or self.source[self.pos] in _TERMINATORS
            or self.source.startswith("}}", self.pos)
        )

    def _action(self, start: int) -> bool:
        source = self.source
        depth = 0
        while True:
            at_delim, trim = self._right_delim()
            if at_delim:
                if depth:
                    raise self.fail("unclosed left paren", start)
                self.tokens.append(_Token(_K.RIGHT, "}}", self.line()))
                self.pos += 4 if trim else 2
                return trim
            if self.pos >= len(source):
                raise self.fail("unclosed action", start)
            begin, char = self.pos, source[self.pos]
            if char in _SPACES:
                while self.pos < len(source) and source[self.pos] in _SPACES:
                    self.pos += 1
                # The last space before "-}}" belongs to the trim marker.
                if source.startswith("-}}", self.pos):
                    self.pos -= 1
                if self.pos > begin:
                    self._emit(_K.SPACE, begin)
            elif char == '"' or char == "'":
                self._quoted(char)
            elif char == "`":
                end = source.find("`", begin + 1)
                if end < 0:
                    raise self.fail("unterminated raw quoted string")
                self.pos = end + 1
                # strconv.Unquote drops carriage returns from raw strings.
                self._emit(_K.STRING, begin, source[begin + 1 : end].replace("\r", ""))
            elif char == "$" or (char == "." and source[begin + 1 : begin + 2] not in _ASCII_DIGITS):
                self.pos += 1
                while self.pos < len(source) and _is_alnum(source[self.pos]):
                    self.pos += 1
                if not self._at_terminator():
                    raise self.fail(f"bad character {source[self.pos]!r}")
                name = source[begin + 1 : self.pos]
                kind = _K.VARIABLE if char == "$" else _K.FIELD if name else _K.DOT
                self._emit(kind, begin, source[begin : self.pos] if char == "$" else name)
            elif char in "+-." or char in _ASCII_DIGITS:
                self._number()
            elif _is_alnum(char):
                while self.pos < len(source) and _is_alnum(source[self.pos]):
                    self.pos += 1
                if not self._at_terminator():
                    raise self.fail(f"bad character {source[self.pos]!r}")
                word = source[begin : self.pos]
                if word in ("true", "false"):
                    self._emit(_K.BOOL, begin, word == "true")
                elif word == "nil":
                    self._emit(_K.NIL, begin)
                else:
                    self._emit(_K.KEYWORD if word in _KEYWORDS else _K.IDENT, begin, word)
            elif char == ":":
                if not source.startswith(":=", begin):
                    raise self.fail("expected :=")
                self.pos += 2
                self._emit(_K.DECLARE, begin)
            else:
                punctuation = {"(": _K.LPAREN, ")": _K.RPAREN, "|": _K.PIPE, ",": _K.COMMA, "=": _K.ASSIGN}.get(char)
                if punctuation is None:
                    raise self.fail(f"unrecognized character in action: {char!r}")
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth < 0:
                    raise self.fail("unexpected right paren")
                self.pos += 1
                self._emit(punctuation, begin)

    def _quoted(self, quote: str) -> None:
        source, begin = self.source, self.pos
        self.pos += 1
        while True:
            if self.pos >= len(source) or source[self.pos] == "\n":
                raise self.fail("unterminated quoted string" if quote == '"' else "unterminated character constant")
            char = source[self.pos]
            self.pos += 1
            if char == "\\":
                if self.pos >= len(source) or source[self.pos] == "\n":
                    raise self.fail("unterminated quoted string")
                self.pos += 1
            elif char == quote:
                break
        codes = self._unescape(source[begin + 1 : self.pos - 1], quote)
        if quote == "'":
            if len(codes) != 1:
                raise self.fail(f"malformed character constant: {source[begin : self.pos]}")
            self._emit(_K.NUMBER, begin, codes[0][0])
            return
        data = bytearray()
        for code, is_byte in codes:
            data += bytes([code]) if is_byte else chr(code).encode("utf-8", "surrogatepass")
        self._emit(_K.STRING, begin, _from_go_bytes(bytes(data)))

    def _unescape(self, body: str, quote: str) -> list[tuple[int, bool]]:
        """Go's escapes: (code, is_a_raw_byte) per character of ``body``."""
        codes: list[tuple[int, bool]] = []
        i = 0
        while i < len(body):
            char = body[i]
            i += 1
            if char != "\\":
                codes.append((ord(char), False))
                continue
            escape = body[i]
            i += 1
            if escape in _SIMPLE_ESCAPES or escape == quote:
                codes.append((_SIMPLE_ESCAPES.get(escape, ord(escape)), False))
                continue
            if escape in "xuU":
                length, base = {"x": 2, "u": 4, "U": 8}[escape], 16
                digits = body[i : i + length]
            elif escape in _DIGITS[8]:
                length, base = 3, 8
                digits = body[i - 1 : i + 2]
            else:
                raise self.fail(f"unknown escape \\{escape} in a quoted string")
            i += len(digits) - (1 if base == 8 else 0)
            is_byte = escape not in "uU"
            valid = len(digits) == length and all(d in _DIGITS[base] for d in digits)
            code = int(digits, base) if valid else -1
            if code < 0 or code > (0xFF if is_byte else 0x10FFFF) or (not is_byte and 0xD800 <= code <= 0xDFFF):
                raise self.fail(f"invalid escape \\{escape if base == 16 else ''}{digits} in a quoted string")
            codes.append((code, is_byte))
        return codes

    def _number(self) -> None:
        begin = self.pos
        match = _NUMBER.match(self.source, begin)
        assert match is not None  # every part of the pattern is optional
        self.pos = match.end()
        if self.pos < len(self.source) and _is_alnum(self.source[self.pos]):
            raise self.fail(f"bad number syntax: {self.source[begin : self.pos + 1]!r}")
        self._emit(_K.NUMBER, begin, self._number_value(match.group()))

    def _number_value(self, text: str) -> int | float:
        if text.endswith("i"):
            raise self.fail(f"complex numbers are not supported: {text}")
        lowered = text.lower()
        try:
            if "0x" in lowered and "p" in lowered:
                return float.fromhex(text.replace("_", ""))  # OverflowError beyond float64, as Go refuses
            if "0x" not in lowered and any(c in lowered for c in ".e"):
                number = float(text)
                if math.isinf(number):
                    raise ValueError(text)  # Go's parser refuses what is out of a float64's range
                return number
            if re.fullmatch(r"[+-]?0[0-7_]+", text):
                value = int(text, 8)  # Go's legacy octal, 017
            else:
                value = int(text, 0)
        except (ValueError, OverflowError):
            raise self.fail(f"illegal number syntax: {text!r}") from None
        if not -(1 << 63) <= value < 1 << 63:
            raise self.fail(f"integer overflow: {text}")
        return value


# ---- the tree (shaped like Go's text/template/parse, which Ollama's rules walk)


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Field:
    idents: tuple[str, ...]


@dataclass(frozen=True)
class _Variable:
    idents: tuple[str, ...]  # the variable ("$", "$x"), then fields


@dataclass(frozen=True)
class _Dot:
    pass


@dataclass(frozen=True)
class _Ident:
    name: str  # a function


@dataclass(frozen=True)
class _Literal:
    value: str | int | float | bool


@dataclass(frozen=True)
class _Nil:
    pass


@dataclass(frozen=True)
class _Chain:
    node: _Arg
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Command:
    args: tuple[_Arg, ...]
    line: int


@dataclass(frozen=True)
class _Pipe:
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[_Command, ...]
    line: int


@dataclass(frozen=True)
class _Action:
    pipe: _Pipe
    line: int


@dataclass(frozen=True)
class _Branch:
    kind: str  # "if", "range" or "with"
    pipe: _Pipe
    body: _List
    else_: _List | None
    line: int


@dataclass(frozen=True)
class _Jump:
    kind: str  # "break" or "continue"
    line: int


@dataclass(frozen=True)
class _List:
    nodes: tuple[_Node, ...]


@dataclass(frozen=True)
class _Closer:
    """``{{ end }}`` or ``{{ else }}`` while parsing; never in a finished tree."""

    kind: str
    line: int


_Arg = _Field | _Variable | _Dot | _Ident | _Literal | _Nil | _Chain | _Pipe
_Node = _Text | _Action | _Branch | _Jump | _List

_GO_BUILTINS = frozenset(
    {"and", "or", "not", "len", "index", "slice", "print", "printf", "println", "eq", "ne", "lt", "le", "gt", "ge"}
)
_UNSUPPORTED_FUNCTIONS = frozenset({"call", "html", "js", "urlquery"})
_OPERAND_START = frozenset({_K.BOOL, _K.DOT, _K.FIELD, _K.IDENT, _K.NUMBER, _K.NIL, _K.STRING, _K.VARIABLE, _K.LPAREN})


def _describe(node: _Arg) -> str:
    if isinstance(node, _Field):
        return "." + ".".join(node.idents)
    if isinstance(node, _Variable):
        return ".".join(node.idents)
    if isinstance(node, _Dot):
        return "."
    if isinstance(node, _Ident):
        return node.name
    if isinstance(node, _Literal):
        return _go_quote(node.value) if isinstance(node.value, str) else _fmt_v(node.value)
    if isinstance(node, _Nil):
        return "nil"
    if isinstance(node, _Chain):
        return f"({_describe(node.node)})." + ".".join(node.fields)
    return "(" + " | ".join(" ".join(_describe(a) for a in cmd.args) for cmd in node.cmds) + ")"


class _Parser:
    """Go's parser, over the lexer's tokens, for the supported subset."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.vars = ["$"]
        self.range_depth = 0
        self.nesting = 0

    def fail(self, token: _Token, message: str) -> TemplateError:
        return TemplateError(f"template line {token.line}: {message}")

    def next(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def peek_non_space(self) -> _Token:
        while self.tokens[self.pos].kind is _K.SPACE:
            self.pos += 1
        return self.tokens[self.pos]

    def next_non_space(self) -> _Token:
        token = self.peek_non_space()
        self.pos += 1
        return token

    def unexpected(self, token: _Token, context: str) -> TemplateError:
        shown = "end of template" if token.kind is _K.EOF else repr(token.text)
        return self.fail(token, f"unexpected {shown} in {context}")

    def enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise self.fail(token, f"the template nests deeper than {_MAX_NESTING} levels")

    def parse(self) -> _List:
        nodes: list[_Node] = []
        while self.peek().kind is not _K.EOF:
            node = self.text_or_action()
            if isinstance(node, _Closer):
                raise TemplateError(f"template line {node.line}: unexpected {{{{{node.kind}}}}}")
            nodes.append(node)
        return _List(tuple(nodes))

    def text_or_action(self) -> _Node | _Closer:
        token = self.next_non_space()
        if token.kind is _K.TEXT:
            return _Text(token.text)
        if token.kind is _K.LEFT:
            return self.action()
        raise self.unexpected(token, "input")

    def item_list(self, context: str, opened: _Token) -> tuple[_List, _Closer]:
        nodes: list[_Node] = []
        while self.peek_non_space().kind is not _K.EOF:
            node = self.text_or_action()
            if isinstance(node, _Closer):
                return _List(tuple(nodes)), node
            nodes.append(node)
        raise self.fail(opened, f"{{{{{context}}}}} is never closed with {{{{end}}}}")

    def action(self) -> _Node | _Closer:
        token = self.next_non_space()
        if token.kind is _K.KEYWORD:
            keyword = str(token.value)
            if keyword in ("if", "range", "with"):
                return self.control(keyword, token)
            if keyword == "end":
                self.expect_right("end")
                return _Closer("end", token.line)
            if keyword == "else":
                # "else if"/"else with": leave the keyword for control() to parse as the else branch.
                chained = self.peek_non_space()
                if chained.kind is not _K.KEYWORD or chained.value not in ("if", "with"):
                    self.expect_right("else")
                return _Closer("else", token.line)
            if keyword in ("break", "continue"):
                if not self.range_depth:
                    raise self.fail(token, f"{{{{{keyword}}}}} outside {{{{range}}}}")
                self.expect_right(keyword)
                return _Jump(keyword, token.line)
            raise self.fail(
                token,
                f"{{{{{keyword}}}}} is not supported (named templates are outside the subset of Go templates "
                "that chat templates use)",
            )
        self.pos -= 1
        return _Action(self.pipeline("command", _K.RIGHT), token.line)

    def expect_right(self, context: str) -> None:
        token = self.next_non_space()
        if token.kind is not _K.RIGHT:
            raise self.unexpected(token, context)

    def control(self, context: str, opened: _Token) -> _Branch:
        mark = len(self.vars)
        self.enter(opened)
        try:
            pipe = self.pipeline(context, _K.RIGHT)
            if context == "range":
                self.range_depth += 1
            body, closer = self.item_list(context, opened)
            if context == "range":
                self.range_depth -= 1
            else_: _List | None = None
            if closer.kind == "else":
                chained = self.peek_non_space()
                if context in ("if", "with") and chained.kind is _K.KEYWORD and chained.value == context:
                    # {{ else if b }} … {{ end }} is {{ else }}{{ if b }} … {{ end }}{{ end }} with one {{ end }}.
                    self.next()
                    else_ = _List((self.control(context, chained),))
                else:
                    else_, closer = self.item_list(context, opened)
                    if closer.kind != "end":
                        raise TemplateError(f"template line {closer.line}: expected {{{{end}}}}; found {{{{else}}}}")
            return _Branch(context, pipe, body, else_, opened.line)
        finally:
            del self.vars[mark:]
            self.nesting -= 1

    def pipeline(self, context: str, end: _K) -> _Pipe:
        start = self.peek_non_space()
        decl: list[str] = []
        is_assign = False
        while True:
            saved = self.pos
            variable = self.next_non_space()
            if variable.kind is not _K.VARIABLE:
                self.pos = saved
                break
            after = self.next_non_space()
            if after.kind in (_K.DECLARE, _K.ASSIGN):
                is_assign = after.kind is _K.ASSIGN
                decl.append(variable.text)
                self.vars.append(variable.text)
                break
            if after.kind is _K.COMMA:
                decl.append(variable.text)
                self.vars.append(variable.text)
                if context == "range" and len(decl) < 2:
                    if self.peek_non_space().kind in (_K.VARIABLE, _K.RIGHT, _K.RPAREN):
                        continue
                    raise self.fail(after, "range can only initialize variables")
                raise self.fail(after, f"too many declarations in {context}")
            self.pos = saved
            break
        cmds: list[_Command] = []
        while True:
            token = self.next_non_space()
            if token.kind is end:
                break
            if token.kind not in _OPERAND_START:
                raise self.unexpected(token, context)
            self.pos -= 1
            cmds.append(self.command())
        if not cmds:
            raise self.fail(start, f"missing value for {context}")
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _Literal | _Nil | _Dot):
                raise self.fail(start, f"non executable command in pipeline stage {stage}")
        return _Pipe(tuple(decl), is_assign, tuple(cmds), start.line)

    def command(self) -> _Command:
        line = self.peek_non_space().line
        args: list[_Arg] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            token = self.next()
            if token.kind is _K.SPACE:
                continue
            if token.kind in (_K.RIGHT, _K.RPAREN):
                self.pos -= 1
            elif token.kind is not _K.PIPE:
                raise self.unexpected(token, "operand")
            break
        if not args:
            raise self.fail(self.peek(), "empty command")
        return _Command(tuple(args), line)

    def operand(self) -> _Arg | None:
        node = self.term()
        if node is None or self.peek().kind is not _K.FIELD:
            return node
        fields: list[str] = []
        while self.peek().kind is _K.FIELD:
            fields.append(str(self.next().value))
        if isinstance(node, _Field):
            return _Field(node.idents + tuple(fields))
        if isinstance(node, _Variable):
            return _Variable(node.idents + tuple(fields))
        if isinstance(node, _Literal | _Nil | _Dot):
            raise self.fail(self.peek(), f"unexpected . after term {_describe(node)}")
        return _Chain(node, tuple(fields))

    def term(self) -> _Arg | None:
        token = self.next_non_space()
        kind = token.kind
        if kind is _K.IDENT:
            name = str(token.value)
            if name in _UNSUPPORTED_FUNCTIONS:
                raise self.fail(token, f"function {name!r} is not supported")
            if name not in _FUNCTIONS:
                raise self.fail(token, f"function {name!r} not defined")
            return _Ident(name)
        if kind is _K.DOT:
            return _Dot()
        if kind is _K.NIL:
            return _Nil()
        if kind is _K.VARIABLE:
            if token.text not in self.vars:
                raise self.fail(token, f"undefined variable {token.text!r}")
            return _Variable((token.text,))
        if kind is _K.FIELD:
            return _Field((str(token.value),))
        if kind in (_K.BOOL, _K.NUMBER, _K.STRING):
            assert isinstance(token.value, str | int | float)
            return _Literal(token.value)
        if kind is _K.LPAREN:
            self.enter(token)
            try:
                return self.pipeline("parenthesized pipeline", _K.RPAREN)
            finally:
                self.nesting -= 1
        self.pos -= 1
        return None


# ---- Ollama's treatment of a parsed template


def _identifiers(node: _Node | _Arg) -> Iterable[str]:
    """Ollama's ``Identifiers``: the fields and variables a template names, which decide how it is run."""
    if isinstance(node, _List):
        for child in node.nodes:
            yield from _identifiers(child)
    elif isinstance(node, _Action):
        yield from _identifiers(node.pipe)
    elif isinstance(node, _Branch):
        yield from _identifiers(node.pipe)
        yield from _identifiers(node.body)
        if node.else_ is not None:
            yield from _identifiers(node.else_)
    elif isinstance(node, _Pipe):
        for cmd in node.cmds:
            for arg in cmd.args:
                yield from _identifiers(arg)
    elif isinstance(node, _Field | _Variable):
        yield from node.idents


_RESPONSE_ACTION = _Action(_Pipe((), False, (_Command((_Field(("Response",)),), 0),), 0), 0)


class _ResponseCut:
    """Ollama's ``deleteNode`` for the final turn of an old-style template: everything walked after the
    ``.Response`` field is dropped (the field itself stays, and prints an unfinished assistant turn, or nothing)."""

    def __init__(self) -> None:
        self.cut = False

    def _drops(self, node: object) -> bool:
        if isinstance(node, _Field) and "Response" in node.idents:
            self.cut = True
            return False
        return self.cut

    def list(self, node: _List) -> _List:
        kept = (self.node(child) for child in node.nodes)
        return _List(tuple(child for child in kept if child is not None))

    def node(self, node: _Node) -> _Node | None:
        if self._drops(node):
            return None
        if isinstance(node, _List):
            return self.list(node)
        if isinstance(node, _Branch):
            # Like Ollama, the branch's own pipeline is not looked at, only its lists.
            body = self.list(node.body)
            if node.else_ is None:
                return dataclasses.replace(node, body=body)
            if self.cut:
                # Ollama's walk fails on this shape (it cannot cut into the else list), so no prompt comes out.
                raise TemplateError(
                    f"template line {node.line}: {{{{ .Response }}}} inside {{{{{node.kind}}}}} … {{{{else}}}} "
                    "cannot be cut at the answer (Ollama cannot render this template either)"
                )
            return dataclasses.replace(node, body=body, else_=self.list(node.else_))
        if isinstance(node, _Action):
            pipe = self.pipe(node.pipe)
            return None if pipe is None else dataclasses.replace(node, pipe=pipe)
        return node

    def pipe(self, pipe: _Pipe) -> _Pipe | None:
        if self._drops(pipe):
            return None
        cmds: list[_Command] = []
        for cmd in pipe.cmds:
            args: list[_Arg] = []
            for arg in cmd.args:
                kept = self.pipe(arg) if isinstance(arg, _Pipe) else None if self._drops(arg) else arg
                if kept is not None:
                    args.append(kept)
            if not args:
                return None
            cmds.append(dataclasses.replace(cmd, args=tuple(args)))
        return dataclasses.replace(pipe, cmds=tuple(cmds))


@dataclass(frozen=True)
class _Template:
    root: _List
    uses_messages: bool
    #: The tree for an old-style template's final turn, or why there is none.
    final_turn: _List | TemplateError


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> _Template | TemplateError:
    # Errors are cached too: a broken template is rendered (and refused) on every request just the same.
    if len(source) > _MAX_SOURCE:
        return TemplateError(f"the template is larger than {_MAX_SOURCE >> 20} MiB")
    try:
        root = _Parser(_Lexer(source).run()).parse()
    except TemplateError as error:
        return error
    names = {name.lower() for name in _identifiers(root)}
    if "messages" not in names and "response" not in names:
        # Ollama appends {{ .Response }} to templates that never print it.
        root = _List((*root.nodes, _RESPONSE_ACTION))
    final_turn: _List | TemplateError
    try:
        final_turn = _ResponseCut().list(root)
    except TemplateError as error:
        final_turn = error
    return _Template(root, "messages" in names, final_turn)


def _parsed(source: str) -> _Template:
    compiled = _compile(source)
    if isinstance(compiled, TemplateError):
        raise TemplateError(str(compiled))
    return compiled


# ---- Go's and Ollama's functions


def _arity(name: str, args: Sequence[object], least: int, most: int | None = None) -> None:
    if most is None and len(args) < least:
        raise _Failure(f"wrong number of args for {name}: want at least {least} got {len(args)}")
    if most is not None and not least <= len(args) <= most:
        raise _Failure(f"wrong number of args for {name}: want {least} got {len(args)}")


def _kind(value: object) -> str:
    """Go's ``basicKind`` for comparisons ("" for what is not a basic value)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return ""


def _eq(args: Sequence[object]) -> bool:
    _arity("eq", args, 1)
    first, others = args[0], args[1:]
    if not others:
        raise _Failure("error calling eq: missing argument for comparison")
    if isinstance(first, tuple | dict):
        raise _Failure("error calling eq: invalid type for comparison")
    for other in others:
        first_kind, other_kind = _kind(first), _kind(other)
        if first_kind != other_kind:
            if first is not None and other is not None:
                raise _Failure(
                    f"error calling eq: incompatible types for comparison: {_go_type(first)} and {_go_type(other)}"
                )
            equal = False
        elif first_kind:
            equal = first == other
        elif isinstance(other, tuple | dict):
            raise _Failure(f"error calling eq: non-comparable type {_go_type(other)}")
        else:
            equal = first is other  # nil and nil, or a message and the same message
        if equal:
            return True
    return False


def _ne(args: Sequence[object]) -> bool:
    _arity("ne", args, 2, 2)
    return not _eq(args)


def _less(name: str, args: Sequence[object]) -> bool:
    _arity(name, args, 2, 2)
    left, right = args
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind in ("", "bool") or right_kind in ("", "bool"):
        raise _Failure(f"error calling {name}: invalid type for comparison")
    if left_kind != right_kind:
        raise _Failure(f"error calling {name}: incompatible types for comparison")
    assert isinstance(left, int | float | str) and isinstance(right, type(left))
    return left < right  # type: ignore[operator]


def _lt(args: Sequence[object]) -> bool:
    return _less("lt", args)


def _le(args: Sequence[object]) -> bool:
    return _less("le", args) or _eq(args)


def _gt(args: Sequence[object]) -> bool:
    return not _le(args)


def _ge(args: Sequence[object]) -> bool:
    return not _lt(args)


def _not(args: Sequence[object]) -> bool:
    _arity("not", args, 1, 1)
    return not _truth(args[0])


def _len(args: Sequence[object]) -> int:
    _arity("len", args, 1, 1)
    item = args[0]
    if isinstance(item, str):
        return len(_go_bytes(item))
    if isinstance(item, tuple | dict):
        return len(item)
    if item is None:
        raise _Failure("error calling len: len of nil pointer")
    raise _Failure(f"error calling len: len of type {_go_type(item)}")


def _int_arg(name: str, value: object, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Failure(f"error calling {name}: cannot index slice/array with type {_go_type(value)}")
    if not 0 <= value <= limit:
        raise _Failure(f"error calling {name}: index out of range: {value}")
    return value


def _index(args: Sequence[object]) -> object:
    _arity("index", args, 1)
    item = args[0]
    for key in args[1:]:
        if isinstance(item, dict):
            if not isinstance(key, str):
                raise _Failure(f"error calling index: value has type {_go_type(key)}; should be string")
            item = item.get(key)
        elif isinstance(item, str | tuple):
            sequence = _go_bytes(item) if isinstance(item, str) else item
            position = _int_arg("index", key, len(sequence))
            if position == len(sequence):
                raise _Failure(f"error calling index: index out of range: {position}")
            item = sequence[position]
        elif item is None:
            raise _Failure("error calling index: index of untyped nil")
        else:
            raise _Failure(f"error calling index: can't index item of type {_go_type(item)}")
    return item


def _slice(args: Sequence[object]) -> object:
    _arity("slice", args, 1)
    item, indexes = args[0], args[1:]
    if item is None:
        raise _Failure("error calling slice: slice of untyped nil")
    if not isinstance(item, str | tuple):
        raise _Failure(f"error calling slice: can't slice item of type {_go_type(item)}")
    if len(indexes) > 3:
        raise _Failure(f"error calling slice: too many slice indexes: {len(indexes)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise _Failure("error calling slice: cannot 3-index slice a string")
    sequence = _go_bytes(item) if isinstance(item, str) else item
    bounds = [0, len(sequence)]
    for n, index in enumerate(indexes):
        position = _int_arg("slice", index, len(sequence))
        if n < 2:
            bounds[n] = position
        elif bounds[1] > position:
            raise _Failure(f"error calling slice: invalid slice index: {bounds[1]} > {position}")
    if bounds[0] > bounds[1]:
        raise _Failure(f"error calling slice: invalid slice index: {bounds[0]} > {bounds[1]}")
    part = sequence[bounds[0] : bounds[1]]
    return _from_go_bytes(part) if isinstance(part, bytes) else tuple(part)


def _print(args: Sequence[object]) -> str:
    out: list[str] = []
    for n, arg in enumerate(args):
        # fmt.Sprint puts a space between operands when neither is a string.
        if n and not isinstance(arg, str) and not isinstance(args[n - 1], str):
            out.append(" ")
        out.append(_fmt_v(arg))
    return _bounded("".join(out))


def _println(args: Sequence[object]) -> str:
    return _bounded(" ".join(_fmt_v(arg) for arg in args) + "\n")


def _printf(args: Sequence[object]) -> str:
    _arity("printf", args, 1)
    if not isinstance(args[0], str):
        raise _Failure(f"wrong type for value; expected string; got {_go_type(args[0])}")
    return _bounded(_sprintf(args[0], args[1:]))


def _json(args: Sequence[object]) -> str:
    _arity("json", args, 1, 1)
    return _bounded(_go_json(args[0]))


def _date(days_back: int) -> Callable[[Sequence[object]], str]:
    def date(args: Sequence[object]) -> str:
        for arg in args:
            if not isinstance(arg, str):
                raise _Failure(f"wrong type for value; expected string; got {_go_type(arg)}")
        # Ollama accepts a format argument but ignores it.
        return (datetime.now() - timedelta(days=days_back)).strftime("%Y-%m-%d")

    return date


def _to_typescript_type(args: Sequence[object]) -> str:
    _arity("toTypeScriptType", args, 1, 1)
    return "any"  # what Ollama answers for anything but a tool's property, and there are no tools here


_FUNCTIONS: dict[str, Callable[[Sequence[object]], object]] = {
    "eq": _eq,
    "ne": _ne,
    "lt": _lt,
    "le": _le,
    "gt": _gt,
    "ge": _ge,
    "not": _not,
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "println": _println,
    "printf": _printf,
    "json": _json,
    "toJson": _json,
    "currentDate": _date(0),
    "yesterdayDate": _date(1),
    "toTypeScriptType": _to_typescript_type,
    # and/or evaluate their arguments lazily, so the renderer calls them itself.
    "and": _truth,
    "or": _truth,
}
assert _GO_BUILTINS <= _FUNCTIONS.keys()


# ---- execution


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


def _output_text(value: object) -> str:
    """How an action prints its value: Go's "<no value>" for a missing map entry (Ollama's data is a
    ``map[string]any``), and a message through its pointer, as ``{…}``."""
    if value is None:
        return "<no value>"
    if isinstance(value, _Message):
        return _fmt_v(value)[1:]
    return _fmt_v(value)


class _Renderer:
    """Go's executor: writes one template run into a shared, bounded output."""

    def __init__(self, out: list[str]) -> None:
        self.out = out
        self.size = sum(map(len, out))
        self.steps = 0
        self.iterations = 0
        self.line = 0
        self.vars: list[tuple[str, object]] = []

    def execute(self, root: _List, data: dict[str, object]) -> None:
        self.vars = [("$", data)]
        try:
            self.walk(data, root)
        except _Failure as failure:
            raise TemplateError(f"template line {self.line}: {failure}") from None

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > _MAX_OUTPUT:
            raise _Failure(f"the output is longer than {_MAX_OUTPUT >> 20} MiB")
        self.out.append(text)

    def step(self, line: int) -> None:
        self.line = line or self.line
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Failure(f"rendering takes more than {_MAX_STEPS} steps")

    # variables

    def push(self, name: str, value: object) -> None:
        self.vars.append((name, value))

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def set_var(self, name: str, value: object) -> None:
        for n in range(len(self.vars) - 1, -1, -1):
            if self.vars[n][0] == name:
                self.vars[n] = (name, value)
                return
        raise _Failure(f"undefined variable: {name}")

    def set_top_var(self, depth: int, value: object) -> None:
        self.vars[-depth] = (self.vars[-depth][0], value)

    def var_value(self, name: str) -> object:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        raise _Failure(f"undefined variable: {name}")

    # nodes

    def walk(self, dot: object, node: _Node) -> None:
        if isinstance(node, _Text):
            self.write(node.text)
        elif isinstance(node, _List):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, _Action):
            self.step(node.line)
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.write(_output_text(value))
        elif isinstance(node, _Branch):
            self.step(node.line)
            if node.kind == "range":
                self.walk_range(dot, node)
            else:
                mark = len(self.vars)
                value = self.pipeline(dot, node.pipe)
                if _truth(value):
                    self.walk(value if node.kind == "with" else dot, node.body)
                elif node.else_ is not None:
                    self.walk(dot, node.else_)
                self.pop(mark)
        else:
            self.step(node.line)
            raise _BreakLoop() if node.kind == "break" else _ContinueLoop()

    def walk_range(self, dot: object, node: _Branch) -> None:
        mark = len(self.vars)
        value = self.pipeline(dot, node.pipe)
        decl, is_assign = node.pipe.decl, node.pipe.is_assign
        items: Iterable[tuple[object, object]]
        if isinstance(value, tuple):
            items = enumerate(value)
        elif isinstance(value, dict):
            items = ((key, value[key]) for key in sorted(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(decl) > 1:
                raise _Failure(f"can't use {value} to iterate over more than one variable")
            items = ((n, n) for n in range(value))
        elif value is None:
            items = ()
        else:
            raise _Failure(f"range can't iterate over {_fmt_v(value)}")
        inner = len(self.vars)
        ran = False
        for key, element in items:
            ran = True
            self.iterations += 1
            if self.iterations > _MAX_ITERATIONS:
                raise _Failure(f"the template's loops run more than {_MAX_ITERATIONS} times")
            if is_assign:
                self.set_var(decl[0], key if len(decl) > 1 else element)
                if len(decl) > 1:
                    self.set_var(decl[1], element)
            elif decl:
                self.set_top_var(1, element)
                if len(decl) > 1:
                    self.set_top_var(2, key)
            try:
                self.walk(element, node.body)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                break
            finally:
                self.pop(inner)
        if not ran and node.else_ is not None:
            self.walk(dot, node.else_)
        self.pop(mark)

    # expressions

    def pipeline(self, dot: object, pipe: _Pipe) -> object:
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.push(name, value)
        return value

    def command(self, dot: object, cmd: _Command, final: object) -> object:
        self.step(cmd.line)
        first = cmd.args[0]
        if isinstance(first, _Ident):
            return self.call(dot, first.name, cmd.args[1:], final)
        if len(cmd.args) > 1 or final is not _MISSING:
            raise _Failure(f"can't give argument to non-function {_describe(first)}")
        if isinstance(first, _Nil):
            raise _Failure("nil is not a command")
        return self.arg(dot, first)

    def arg(self, dot: object, node: _Arg) -> object:
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Field):
            return self.fields(dot, node.idents)
        if isinstance(node, _Variable):
            return self.fields(self.var_value(node.idents[0]), node.idents[1:])
        if isinstance(node, _Chain):
            return self.fields(self.arg(dot, node.node), node.fields)
        if isinstance(node, _Ident):
            return self.call(dot, node.name, (), _MISSING)
        return self.pipeline(dot, node)

    def fields(self, receiver: object, names: Sequence[str]) -> object:
        for name in names:
            if isinstance(receiver, dict):
                receiver = receiver.get(name)
            elif isinstance(receiver, _Message) and name in _MESSAGE_FIELDS:
                receiver = getattr(receiver, name)
            elif receiver is None:
                # What Go says for a field of a missing entry under Ollama's missingkey=zero.
                raise _Failure(f"nil pointer evaluating interface {{}}.{name}")
            else:
                raise _Failure(f"can't evaluate field {name} in type {_go_type(receiver)}")
        return receiver

    def call(self, dot: object, name: str, nodes: Sequence[_Arg], final: object) -> object:
        if name in ("and", "or"):
            # Since Go 1.18 these stop at the first argument that decides, without evaluating the rest.
            thunks: list[Callable[[], object]] = [functools.partial(self.arg, dot, node) for node in nodes]
            if final is not _MISSING:
                thunks.append(lambda: final)
            if not thunks:
                raise _Failure(f"wrong number of args for {name}: want at least 1 got 0")
            value: object = None
            for thunk in thunks:
                value = thunk()
                if _truth(value) == (name == "or"):
                    return value
            return value
        args = [self.arg(dot, node) for node in nodes]
        if final is not _MISSING:
            args.append(final)
        return _FUNCTIONS[name](args)


# ---- Ollama's rendering of a chat


def _collate(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[_Message]]:
    """Ollama's ``collate``: the system text, and the turns with consecutive ones of a role (but tool) merged."""
    system: list[str] = []
    turns: list[_Message] = []
    for message in messages:
        role, content = message["role"], message.get("content", "")
        if role == "system":
            system.append(content)
        if turns and turns[-1].Role == role and role != "tool":
            turns[-1] = dataclasses.replace(turns[-1], Content=f"{turns[-1].Content}\n\n{content}")
        else:
            turns.append(_Message(role, content))
    return "\n\n".join(system), turns


def _turn_data(system: str, prompt: str, response: str) -> dict[str, object]:
    return {"System": system, "Prompt": prompt, "Response": response, **_THINKING}


_THINKING: dict[str, object] = {"Think": False, "ThinkLevel": "", "IsThinkSet": False}


def render_ollama_template(source: str, messages: Sequence[Mapping[str, str]]) -> str:
    """Renders a conversation (dicts with "role" in system|user|assistant and "content") the way Ollama does for
    a chat request, ending where the model's answer should start (generation prompt)."""
    template = _parsed(source)
    system, turns = _collate(messages)
    out: list[str] = []
    if template.uses_messages:
        data: dict[str, object] = {
            "System": system,
            "Messages": tuple(turns) if turns else _NilSlice(),
            "Tools": _NilTools(),
            "Response": "",
            **_THINKING,
        }
        _Renderer(out).execute(template.root, data)
        return _valid_text("".join(out))

    # An old-style template sees one exchange at a time: a run is due whenever a new one starts.
    renderer = _Renderer(out)
    system, prompt, response = "", "", ""
    for turn in turns:
        if turn.Role == "system":
            if prompt or response:
                renderer.execute(template.root, _turn_data(system, prompt, response))
                prompt, response = "", ""
            system = turn.Content
        elif turn.Role == "user":
            if response:
                renderer.execute(template.root, _turn_data(system, prompt, response))
                system, response = "", ""
            prompt = turn.Content
        elif turn.Role == "assistant":
            response = turn.Content
    if isinstance(template.final_turn, TemplateError):
        raise TemplateError(str(template.final_turn))
    renderer.execute(template.final_turn, _turn_data(system, prompt, response))
    return _valid_text("".join(out))
