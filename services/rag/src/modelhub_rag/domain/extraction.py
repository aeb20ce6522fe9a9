"""Plain text out of an uploaded document, with page spans for PDFs.

Offsets that retrieval reports (``start_offset``/``end_offset``) index into the text returned here: for a PDF the
pages' texts joined by blank lines, for CSV one ``column: value`` line per row, for JSON one ``path: value``
line per leaf, for HTML the rendered text, otherwise the decoded file. Everything here is CPU-bound and
synchronous; callers run it in a thread.

Failures are :class:`FileProcessingError` with a stable code (``corrupt_file``, ``encrypted_pdf``, ``no_text``,
``text_too_long``): they describe the file, so retrying never helps.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelhub_rag.domain.filetypes import FileKind, decode_text
from modelhub_rag.errors import FileProcessingError

logger = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class PageSpan:
    """Page ``number`` (1-based) covers ``text[start:end]``."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class ExtractedText:
    text: str
    pages: tuple[PageSpan, ...] = ()


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))


def extract(kind: FileKind, data: bytes, *, max_chars: int) -> ExtractedText:
    extractor = _EXTRACTORS[kind]
    result = extractor(data)
    if not result.text.strip():
        raise FileProcessingError(
            "the file contains no text to index"
            + (" (a scanned PDF without a text layer? OCR is not supported)" if kind == "pdf" else ""),
            code="no_text",
        )
    if len(result.text) > max_chars:
        raise FileProcessingError(
            f"the file's text is {len(result.text)} characters; the limit is {max_chars}", code="text_too_long"
        )
    return result


def _text(data: bytes) -> ExtractedText:
    text = decode_text(data)
    if text is None:
        raise FileProcessingError("the file is not readable text", code="corrupt_file")
    return ExtractedText(_clean(text))


def _pdf(data: bytes) -> ExtractedText:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileProcessingError("the PDF is encrypted with a password", code="encrypted_pdf")
        texts = [page.extract_text() or "" for page in reader.pages]
    except FileProcessingError:
        raise
    except FileNotDecryptedError as exc:
        raise FileProcessingError("the PDF is encrypted with a password", code="encrypted_pdf") from exc
    except PdfReadError as exc:
        raise FileProcessingError(f"the PDF is corrupt: {exc}", code="corrupt_file") from exc
    except Exception as exc:  # pypdf raises many kinds (KeyError, ValueError ...) on damaged files
        raise FileProcessingError(f"the PDF is corrupt: {type(exc).__name__}: {exc}", code="corrupt_file") from exc
    if not texts:
        raise FileProcessingError("the PDF has no pages", code="corrupt_file")
    parts: list[str] = []
    pages: list[PageSpan] = []
    position = 0
    for number, raw in enumerate(texts, start=1):
        text = _clean(raw).strip()
        if parts:
            parts.append(PAGE_SEPARATOR)
            position += len(PAGE_SEPARATOR)
        parts.append(text)
        pages.append(PageSpan(number, position, position + len(text)))
        position += len(text)
    return ExtractedText("".join(parts), tuple(pages))


def _docx(data: bytes) -> ExtractedText:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                cells = [cell.text.strip() for cell in row.cells]
                blocks.append(" | ".join(c for c in cells if c))
    except PackageNotFoundError as exc:
        raise FileProcessingError("the DOCX package is damaged", code="corrupt_file") from exc
    except Exception as exc:  # zipfile, lxml and KeyError on damaged packages
        raise FileProcessingError(
            f"the DOCX file is corrupt: {type(exc).__name__}: {exc}", code="corrupt_file"
        ) from exc
    return ExtractedText(_clean("\n".join(b for b in blocks if b.strip())))


def _html(data: bytes) -> ExtractedText:
    from inscriptis import get_text  # type: ignore[import-untyped]

    text = decode_text(data)
    if text is None:
        raise FileProcessingError("the HTML file is not readable text", code="corrupt_file")
    try:
        rendered = get_text(text)
    except Exception as exc:  # lxml parse errors on pathological markup
        raise FileProcessingError(f"the HTML could not be parsed: {type(exc).__name__}", code="corrupt_file") from exc
    lines = [line.rstrip() for line in _clean(rendered).split("\n")]
    return ExtractedText(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())


def _csv(data: bytes) -> ExtractedText:
    text = decode_text(data)
    if text is None:
        raise FileProcessingError("the CSV file is not readable text", code="corrupt_file")
    sample = "\n".join(text[:65536].splitlines()[:50])
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise FileProcessingError(f"the CSV file is malformed: {exc}", code="corrupt_file") from exc
    if not rows:
        return ExtractedText("")
    header = [h.strip() for h in rows[0]]
    # One line per row with its column names, so a chunk stays understandable without the header row.
    lines = []
    for row in rows[1:] or rows:
        cells = [
            f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {cell.strip()}"
            for i, cell in enumerate(row)
            if cell.strip()
        ]
        lines.append("; ".join(cells))
    return ExtractedText(_clean("\n".join(lines)))


def _json(data: bytes) -> ExtractedText:
    text = decode_text(data)
    try:
        document = json.loads(text) if text is not None else None
    except (ValueError, RecursionError) as exc:
        raise FileProcessingError(f"the JSON file does not parse: {exc}", code="corrupt_file") from exc
    if text is None:
        raise FileProcessingError("the JSON file is not readable text", code="corrupt_file")
    return ExtractedText(
        _clean("\n".join(f"{path}: {value}" if path else value for path, value in _leaves(document, "")))
    )


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """``path: value`` for every scalar, so that keys are searchable next to their values."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    elif value is None:
        yield path, "null"
    elif isinstance(value, bool):
        yield path, "true" if value else "false"
    else:
        yield path, str(value)


_EXTRACTORS = {
    "pdf": _pdf,
    "docx": _docx,
    "html": _html,
    "md": _text,
    "txt": _text,
    "csv": _csv,
    "json": _json,
}
