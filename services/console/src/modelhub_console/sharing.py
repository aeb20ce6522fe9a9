"""Who may use a model file or a knowledge collection, as the share page changes it: the registry and the rag
service store the same shape (``public_read`` and a list of user / group grants, write implying read) and each
checks who may change it; the console only computes the new list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRINCIPAL_TYPES = ("user", "group")
PERMISSIONS = ("read", "write")


@dataclass(frozen=True)
class Grant:
    principal_type: str
    principal_id: str
    permission: str

    def as_json(self) -> dict[str, str]:
        return {"principal_type": self.principal_type, "principal_id": self.principal_id, "permission": self.permission}


@dataclass(frozen=True)
class Access:
    public_read: bool = False
    grants: tuple[Grant, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, public_read: Any, grants: Any) -> Access:
        found = [
            Grant(str(g.get("principal_type", "")), str(g.get("principal_id", "")), str(g.get("permission", "")))
            for g in (grants or [])
            if isinstance(g, dict)
        ]
        return cls(bool(public_read), tuple(sorted(found, key=lambda g: (g.principal_type, g.principal_id))))

    def grants_json(self) -> list[dict[str, str]]:
        return [g.as_json() for g in self.grants]

    def with_grant(self, grant: Grant) -> Access:
        """The grant added; one grant per user or group, so an existing one changes its permission."""
        kept = [
            g for g in self.grants if (g.principal_type, g.principal_id) != (grant.principal_type, grant.principal_id)
        ]
        return Access(self.public_read, tuple(sorted([*kept, grant], key=lambda g: (g.principal_type, g.principal_id))))

    def without(self, principal_type: str, principal_id: str) -> Access:
        return Access(
            self.public_read,
            tuple(g for g in self.grants if (g.principal_type, g.principal_id) != (principal_type, principal_id)),
        )

    def with_public_read(self, public_read: bool) -> Access:
        return Access(public_read, self.grants)


def check_grant(principal_type: str, principal_id: str, permission: str) -> str | None:
    """What is wrong with a grant typed into the form, before the service sees it."""
    if principal_type not in PRINCIPAL_TYPES:
        return "choose a user or a group"
    if not principal_id.strip():
        return f"type the {principal_type}'s id"
    if permission not in PERMISSIONS:
        return "choose read or write"
    return None
