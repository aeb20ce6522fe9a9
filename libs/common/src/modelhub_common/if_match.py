"""``If-Match`` on the routes that change a versioned resource: the version the client edited, as a number.

The services answer an ``ETag`` of the resource's version; a client sends it back (``"3"``, ``W/"3"`` or
bare ``3``) and a change of a newer version is refused with 409 instead of overwriting it. The same rule is
checked here and documented in the OpenAPI documents (:data:`IF_MATCH_PATTERN`).
"""

from __future__ import annotations

import re

__all__ = ["IF_MATCH_PATTERN", "parse_if_match"]

IF_MATCH_PATTERN = r'^\s*((W/)?"?[0-9]{1,18}"?)?\s*$'
_IF_MATCH = re.compile(r'\s*(?:W/)?"?([0-9]{1,18})"?\s*')


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` value names; ``None`` without one (or an empty one). Raises ``ValueError``
    for anything else."""
    if value is None or not value.strip():
        return None
    match = _IF_MATCH.fullmatch(value)
    if match is None:
        raise ValueError(f"not a version number: {value[:40]!r}")
    return int(match.group(1))
