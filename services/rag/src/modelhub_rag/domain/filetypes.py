"""What kind of document an upload is, decided by its content; the file name only picks between text formats.

Binary formats are recognised by their signature (``%PDF-``, a ZIP holding ``word/document.xml``). Everything
else must be text (no NUL bytes, decodable); then JSON must parse, CSV must have a consistent delimiter, and
HTML is recognised by its markup whatever the file is called. A name promising a format the content does not
have (``report.pdf`` holding a PNG) is refused, so a mislabelled file fails at upload, not in a worker.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from charset_normalizer import from_bytes

from modelhub_rag.errors import UnsupportedFileTypeError

FileKind = Literal["pdf", "docx", "html", "md", "txt", "csv", "json"]

CONTENT_TYPES: dict[FileKind, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "md": "text/markdown",
    "txt": "text/plain",
    "csv": "text/csv",
    "json": "application/json",
}
SUPPORTED = "txt, md, html, pdf, docx, csv, json"

_EXTENSIONS: dict[str, FileKind] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "md",
    ".markdown": "md",
    ".txt": "txt",
    ".text": "txt",
    ".csv": "csv",
    ".json": "json",
}
_DECLARED: dict[str, FileKind] = {v: k for k, v in CONTENT_TYPES.items()}

# Signatures of common binary formats people upload by mistake, to name them in the error.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF (WebP/WAV/AVI) file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office (.doc/.xls) file"),
    (b"GGUF", "a GGUF model file"),
    (b"PK\x03\x04", "a ZIP archive"),
)
_HTML_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
_HTML_TAG = re.compile(r"<(html|head|body|p|div|h[1-6]|table|ul|ol|li|br|span|a|title)[\s>/]", re.I)
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class DetectedType:
    kind: FileKind
    content_type: str


def _extension(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    return "word/document.xml" in names and "[Content_Types].xml" in names


def _is_pdf(data: bytes) -> bool:
    # The header may follow up to 1 KiB of junk (PDF 1.7, annex H).
    return b"%PDF-" in data[:1024]


def decode_text(data: bytes) -> str | None:
    """The text of ``data``, or None when it is binary. UTF-8 (with or without BOM) first, then a best guess."""
    if b"\x00" in data[:_SNIFF_BYTES] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    match = from_bytes(data[: 4 * _SNIFF_BYTES]).best()
    if match is None or match.encoding is None:
        return None
    try:
        text = data.decode(match.encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return text.lstrip("\ufeff")


def _looks_like_csv(text: str) -> bool:
    sample = "\n".join(text[:_SNIFF_BYTES].splitlines()[:50])
    if not sample.strip():
        return False
    dialect: type[csv.Dialect] | csv.Dialect
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column has no delimiter to find; the widths below still decide
    try:
        rows = [row for row in csv.reader(io.StringIO(sample), dialect) if row]
    except csv.Error:
        return False
    widths = {len(row) for row in rows[:-1] or rows}
    return len(widths) == 1


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def detect(data: bytes, filename: str, declared_type: str | None = None) -> DetectedType:
    """Decides the kind of ``data``; raises :class:`UnsupportedFileTypeError` naming what it found instead."""
    by_name = _EXTENSIONS.get(_extension(filename))
    declared = _DECLARED.get((declared_type or "").split(";")[0].strip().lower())
    wanted = by_name or declared
    if not data:
        raise UnsupportedFileTypeError(f"{filename} is empty", code="empty_file")
    if _is_pdf(data):
        return DetectedType("pdf", CONTENT_TYPES["pdf"])
    if data.startswith(b"PK\x03\x04") and _is_docx(data):
        return DetectedType("docx", CONTENT_TYPES["docx"])
    if wanted in ("pdf", "docx"):
        found = _binary_name(data) or "something else"
        raise UnsupportedFileTypeError(
            f"{filename} is named like a {wanted.upper()} file but its content is {found}", details={"expected": wanted}
        )
    binary = _binary_name(data)
    text = None if binary else decode_text(data)
    if text is None:
        raise UnsupportedFileTypeError(
            f"{filename} is {binary or 'binary data'}; supported types are {SUPPORTED}",
            details={"found": binary or "binary"},
        )
    kind = _text_kind(text, filename, wanted, data)
    return DetectedType(kind, CONTENT_TYPES[kind])


def _text_kind(text: str, filename: str, wanted: FileKind | None, data: bytes) -> FileKind:
    if wanted == "json":
        if not _parses_as_json(text):
            raise UnsupportedFileTypeError(f"{filename} is named like JSON but its content does not parse as JSON")
        return "json"
    if _HTML_START.match(data[:_SNIFF_BYTES]):
        return "html"
    if wanted == "html":
        if not _HTML_TAG.search(text[:_SNIFF_BYTES]):
            raise UnsupportedFileTypeError(f"{filename} is named like HTML but has no HTML markup")
        return "html"
    if wanted == "csv":
        if not _looks_like_csv(text):
            raise UnsupportedFileTypeError(f"{filename} is named like CSV but its rows do not have the same columns")
        return "csv"
    if wanted in ("md", "txt"):
        return wanted
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and _parses_as_json(text):
        return "json"
    return "txt"


def _binary_name(data: bytes) -> str | None:
    for signature, name in _BINARY_SIGNATURES:
        if data.startswith(signature):
            return name
    return None
