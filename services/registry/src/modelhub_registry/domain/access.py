"""Who may read and write a model file.

Admins may do everything. The owner reads and writes. ``public_read`` lets every user read. Grants give
read or write to a user or a group; write implies read.
"""

from __future__ import annotations

from modelhub_common.auth import Principal
from modelhub_registry.domain.model_file import Access, ModelFile


def _granted(access: Access, principal: Principal, permissions: tuple[str, ...]) -> bool:
    for grant in access.grants:
        if grant.permission not in permissions:
            continue
        if grant.principal_type == "user" and grant.principal_id == principal.subject:
            return True
        if grant.principal_type == "group" and grant.principal_id in principal.groups:
            return True
    return False


def can_read(model: ModelFile, principal: Principal) -> bool:
    return (
        principal.is_admin
        or model.owner_id == principal.subject
        or model.access.public_read
        or _granted(model.access, principal, ("read", "write"))
    )


def can_write(model: ModelFile, principal: Principal) -> bool:
    return principal.is_admin or model.owner_id == principal.subject or _granted(model.access, principal, ("write",))
