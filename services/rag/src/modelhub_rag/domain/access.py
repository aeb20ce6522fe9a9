"""Who may read and change a knowledge collection.

The same rules as model files: admins may do everything; the owner reads and writes; ``public_read`` lets
every user read; grants give read or write to a user or a group, and write implies read. Changing who has
access (``public_read``, grants) and deleting the collection are for the owner and admins only.
"""

from __future__ import annotations

from modelhub_common.auth import Principal
from modelhub_rag.domain.collection import Collection, Permission


def _granted(collection: Collection, principal: Principal, permissions: tuple[Permission, ...]) -> bool:
    for grant in collection.grants:
        if grant.permission not in permissions:
            continue
        if grant.principal_type == "user" and grant.principal_id == principal.subject:
            return True
        if grant.principal_type == "group" and grant.principal_id in principal.groups:
            return True
    return False


def can_read(collection: Collection, principal: Principal) -> bool:
    return (
        principal.is_admin
        or collection.owner_id == principal.subject
        or collection.public_read
        or _granted(collection, principal, ("read", "write"))
    )


def can_write(collection: Collection, principal: Principal) -> bool:
    return principal.is_admin or collection.owner_id == principal.subject or _granted(collection, principal, ("write",))


def can_administer(collection: Collection, principal: Principal) -> bool:
    return principal.is_admin or collection.owner_id == principal.subject
