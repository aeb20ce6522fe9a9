"""Who may read and write a model file.

Admins may do everything. The owner reads and writes. ``public_read`` lets every user read. Grants give
read or write to a user or a group; write implies read.
"""

from __future__ import annotations

from modelhub_common.auth import Principal, may_read, may_write
from modelhub_registry.domain.model_file import ModelFile


def can_read(model: ModelFile, principal: Principal) -> bool:
    return may_read(
        principal, owner_id=model.owner_id, public_read=model.access.public_read, grants=model.access.grants
    )


def can_write(model: ModelFile, principal: Principal) -> bool:
    return may_write(principal, owner_id=model.owner_id, grants=model.access.grants)
