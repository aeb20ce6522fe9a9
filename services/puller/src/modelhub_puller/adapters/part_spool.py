"""Parts in flight, spooled to a local directory so that a restarted puller continues them.

Completed parts live in the S3 multipart upload (and ``blob_upload_parts``); what a killed process loses is
the parts it was still receiving, up to ``parallel_parts`` of them. Each of those is appended here as its
bytes arrive, and removed once S3 has stored the part and Postgres has recorded it, so the directory holds
at most the parts in flight. A process that takes the upload over on the same disk (the container restarted
in its pod, or the same host) loads a part's spooled bytes and asks the registry only for the rest. Another
replica finds no spool and fetches the part whole, as without a spool.

Layout: ``<directory>/<digest hex>/<upload key>-<part number>.part``. The upload key is derived from the S3
upload id, so the bytes of an abandoned upload (which may have had another part size) are never mixed into
a new one. Only a checked hex digest from a manifest becomes part of a path.

A spooled file is only ever appended to with the bytes received, in order, so it is a prefix of its part;
the blob's SHA-256 at the end covers those bytes like every other (a resumed download is read back from S3
and verified). Spooling is a best effort: a file system error disables it for that part and the download
goes on from memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from modelhub_puller.domain import manifest as mf

logger = logging.getLogger(__name__)

# Bytes received are written in batches of this size; a kill loses at most this much of a part's spool.
_FLUSH_BYTES = 256 * 1024


class PartSpool:
    """The spool directory; ``None`` disables spooling (every part in flight is lost on a kill)."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory

    def upload(self, digest: str, upload_id: str) -> UploadSpool:
        if self._directory is None:
            return UploadSpool(None, "")
        folder = self._directory / mf.check_digest(digest).removeprefix("sha256:")
        return UploadSpool(folder, hashlib.sha256(upload_id.encode()).hexdigest()[:16])


class UploadSpool:
    """The spooled parts of one multipart upload."""

    def __init__(self, folder: Path | None, key: str) -> None:
        self._folder = folder
        self._key = key

    def prune(self) -> None:
        """Removes what other (abandoned) uploads of the same blob left behind."""
        if self._folder is None or not self._folder.is_dir():
            return
        for path in self._folder.iterdir():
            if not path.name.startswith(f"{self._key}-"):
                with contextlib.suppress(OSError):
                    path.unlink()

    def spooled(self, number: int, length: int) -> int:
        """Bytes of part ``number`` already spooled (0 when none, or when the file cannot be trusted)."""
        if self._folder is None:
            return 0
        try:
            size = self._path(number).stat().st_size
        except OSError:
            return 0
        return size if size <= length else 0

    def open(self, number: int, length: int) -> SpooledPart:
        """Part ``number`` in memory, with the bytes a previous process spooled already loaded."""
        part = SpooledPart(length)
        if self._folder is None:
            return part
        path = self._path(number)
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+b", buffering=0)
        except OSError as exc:
            logger.warning("cannot spool a part; continuing without", extra={"path": str(path), "error": str(exc)})
            return part
        try:
            handle.seek(0)
            have = 0
            while have < length and (count := handle.readinto(part.view[have:length])):
                have += count
            if handle.read(1):  # longer than the part: not ours to trust
                handle.truncate(0)
                have = 0
        except OSError as exc:
            handle.close()
            logger.warning(
                "cannot read a spooled part; fetching it whole", extra={"path": str(path), "error": str(exc)}
            )
            return part
        part.attach(handle, path, have)
        return part

    def discard(self) -> None:
        """Removes every spooled part of the blob (it is stored, or its upload was dropped)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _path(self, number: int) -> Path:
        assert self._folder is not None
        return self._folder / f"{self._key}-{number}.part"


class SpooledPart:
    """One part's bytes: a buffer of the part's length, filled in order and mirrored to its spool file."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.buffer = bytearray(length)
        self.view = memoryview(self.buffer)
        self.received = 0
        self._written = 0
        self._path: Path | None = None
        self._handle: BinaryIO | None = None

    def attach(self, handle: BinaryIO, path: Path, have: int) -> None:
        self._handle = handle
        self._path = path
        self.received = self._written = have

    def add(self, chunk: bytes) -> None:
        """Appends received bytes (the caller has checked that they fit)."""
        end = self.received + len(chunk)
        self.view[self.received : end] = chunk
        self.received = end
        if self._handle is not None and end - self._written >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._handle is None:
            return
        try:
            # Page-cache writes of about 256 KiB: cheap enough for the event loop, and a killed process keeps them.
            while self._written < self.received:
                self._written += os.write(self._handle.fileno(), self.view[self._written : self.received])
        except OSError as exc:
            logger.warning("spooling a part failed; continuing without", extra={"error": str(exc)})
            self._close_file()

    def remove(self) -> None:
        """The part is stored: its spool file is no longer needed."""
        path = self._path
        self._close_file()
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def close(self) -> None:
        """Keeps the spooled bytes for whoever continues the part later."""
        self.flush()
        self._close_file()

    def _close_file(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        self._handle = None
        self._path = None
