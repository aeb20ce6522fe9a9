"""Small documents of every supported type, made by the tests themselves (no fixtures on disk)."""

from __future__ import annotations

import io
import json


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one text page per item (Helvetica, ASCII), written object by object with an xref table."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    kids = []
    for index, text in enumerate(pages):
        page_id, content_id = 4 + 2 * index, 5 + 2 * index
        kids.append(f"{page_id} 0 R")
        lines = " ".join(f"({_pdf_escape(line)}) Tj T*" for line in text.split("\n"))
        stream = f"BT /F1 11 Tf 14 TL 50 760 Td {lines} ET".encode("latin-1")
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            f" /Contents {content_id} 0 R >>"
        ).encode()
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for number in range(1, size):
        out += f"{offsets[number]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def corrupt_pdf() -> bytes:
    """Starts like a PDF, then garbage: the upload accepts it (content says PDF), the worker cannot read it."""
    good = make_pdf(["This page will never be read."])
    return good[:40] + b"\x00garbage\xff" * 50


SAMPLES: dict[str, tuple[str, bytes, str]] = {
    # name -> (file name, content, a phrase the file contains and a query finds)
    "txt": (
        "notes.txt",
        b"Gardening notes.\n\nTomatoes need six hours of direct sunlight and deep watering twice a week.\n",
        "tomatoes sunlight watering",
    ),
    "md": (
        "guide.md",
        b"# Kayak guide\n\nAlways wear a buoyancy aid when paddling a sea kayak near cliffs.\n",
        "sea kayak buoyancy aid",
    ),
    "html": (
        "page.html",
        b"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head><body>"
        b"<h1>Bakery</h1><p>Our sourdough bread rises for thirty hours before baking.</p>"
        b"<script>var hidden = 'do not index me';</script></body></html>",
        "sourdough bread rises",
    ),
    "csv": (
        "planets.csv",
        b"planet,moons,notes\nMars,2,red dusty planet with Olympus Mons\nJupiter,95,gas giant with a great red spot\n",
        "Olympus Mons on Mars",
    ),
    "json": (
        "config.json",
        json.dumps({"service": {"name": "telescope", "mirror_diameter_m": 6.5, "site": "Atacama desert"}}).encode(),
        "telescope mirror Atacama",
    ),
}
