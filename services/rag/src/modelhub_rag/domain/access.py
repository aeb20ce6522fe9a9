"""Who may read and change a knowledge collection.

The same rules as model files: admins may do everything; the owner reads and writes; ``public_read`` lets
every user read; grants give read or write to a user or a group, and write implies read. Changing who has
access (``public_read``, grants) and deleting the collection are for the owner and admins only.
"""

from __future__ import annotations

from modelhub_common.auth import Principal, may_read, may_write
from modelhub_rag.domain.collection import Collection


def can_read(collection: Collection, principal: Principal) -> bool:
    return may_read(
        principal, owner_id=collection.owner_id, public_read=collection.public_read, grants=collection.grants
    )


def can_write(collection: Collection, principal: Principal) -> bool:
    return may_write(principal, owner_id=collection.owner_id, grants=collection.grants)


def can_administer(collection: Collection, principal: Principal) -> bool:
    return principal.is_admin or collection.owner_id == principal.subject
