"""The rag service's errors. Each carries a stable ``code`` and the HTTP status the REST entrypoint answers with.

Errors met while indexing a file say whether retrying can help: :class:`FileProcessingError` (the file itself
is bad: corrupt, empty, unsupported) marks the file failed at once; :class:`EmbedderUnavailableError` and
dependency errors are retried with back-off.
"""

from __future__ import annotations

from typing import Any

from modelhub_common.errors import ModelhubError


class RagError(ModelhubError):
    code = "rag_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code)
        self.details = details


class KnowledgeNotFoundError(RagError):
    code = "knowledge_not_found"
    http_status = 404


class KnowledgeFileNotFoundError(RagError):
    """A file id that is not in the collection."""

    code = "file_not_found"
    http_status = 404


class ForbiddenError(RagError):
    code = "permission_denied"
    http_status = 403


class ConflictError(RagError):
    code = "conflict"
    http_status = 409


class InvalidRequestError(RagError):
    code = "invalid_request"
    http_status = 422


class FileTooLargeError(RagError):
    code = "file_too_large"
    http_status = 413


class UnsupportedFileTypeError(RagError):
    code = "unsupported_file_type"
    http_status = 415


class ReindexRequiredError(RagError):
    """The collection's vectors come from another embedder than the one this service runs."""

    code = "reindex_required"
    http_status = 409


class FileProcessingError(RagError):
    """The file cannot be indexed as it is (corrupt, encrypted, no text). Retrying does not help."""

    code = "file_unprocessable"
    http_status = 422


class EmbedderError(RagError):
    """The embedder failed in a way retrying will not fix (bad configuration, wrong vector size)."""

    code = "embedder_error"
    http_status = 500


class EmbedderUnavailableError(RagError):
    """The embedder could not be reached or timed out; worth retrying."""

    code = "embedder_unavailable"
    http_status = 503
