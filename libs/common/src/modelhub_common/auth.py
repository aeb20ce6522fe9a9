"""Bearer tokens: HS256 JWTs every service verifies on its own.

Claims: ``sub`` (user id), ``role`` (``admin`` or ``user``), ``groups`` (list of group ids), ``exp``, ``iat``
and ``iss``. A shared secret lets each service check access without calling another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import jwt

from modelhub_common.errors import AuthError, PermissionDeniedError

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    role: Role
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def in_any_group(self, groups: Sequence[str]) -> bool:
        return not self.groups.isdisjoint(groups)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDeniedError("this action needs the admin role")


class Grant(Protocol):
    """A read or write grant to a user or a group, as model files and knowledge collections carry them."""

    @property
    def principal_type(self) -> str: ...

    @property
    def principal_id(self) -> str: ...

    @property
    def permission(self) -> str: ...


def _granted(grants: Iterable[Grant], principal: Principal, permissions: tuple[str, ...]) -> bool:
    for grant in grants:
        if grant.permission not in permissions:
            continue
        if grant.principal_type == "user" and grant.principal_id == principal.subject:
            return True
        if grant.principal_type == "group" and grant.principal_id in principal.groups:
            return True
    return False


def may_read(principal: Principal, *, owner_id: str, public_read: bool, grants: Iterable[Grant]) -> bool:
    """The access rule shared by model files and knowledge collections: admins and the owner; everyone when
    ``public_read``; users and groups with a read or write grant (write implies read)."""
    return (
        principal.is_admin
        or owner_id == principal.subject
        or public_read
        or _granted(grants, principal, ("read", "write"))
    )


def may_write(principal: Principal, *, owner_id: str, grants: Iterable[Grant]) -> bool:
    """Admins, the owner, and users and groups with a write grant."""
    return principal.is_admin or owner_id == principal.subject or _granted(grants, principal, ("write",))


def _check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise AuthError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes", code="configuration")


def issue_token(
    secret: str,
    *,
    subject: str,
    role: str,
    groups: Sequence[str] = (),
    ttl_seconds: int,
    issuer: str = "modelhub",
    now: float | None = None,
) -> str:
    """Signs a token. Used by the dev stack, tests and admin tooling; real deployments may use their IdP."""
    _check_secret(secret)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "role": role,
        "groups": list(groups),
        "iat": issued,
        "exp": issued + ttl_seconds,
        "iss": issuer,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str, *, issuer: str = "modelhub", leeway_seconds: float = 30) -> Principal:
    """Checks signature, expiry, issuer and claim shapes; raises :class:`AuthError` naming what is wrong."""
    _check_secret(secret)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            leeway=leeway_seconds,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("the bearer token has expired; get a new one") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("the bearer token was issued by someone else") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"the bearer token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("the bearer token's signature does not match") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError("the bearer token is malformed") from exc
    role = claims.get("role", "user")
    if role not in ROLES:
        raise AuthError(f"the bearer token has an unknown role {role!r}")
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AuthError("the bearer token's groups claim must be a list of strings")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise AuthError("the bearer token's subject is empty")
    return Principal(subject=subject, role=role, groups=frozenset(groups))


def parse_authorization_header(value: str | None) -> str:
    """Extracts the token from ``Authorization: Bearer <token>``."""
    if not value:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


# As long as verify_token accepts a token past its expiry (clock skew between services).
_LEEWAY_SECONDS = 30.0


class VerifiedTokens:
    """Bearer tokens already verified, remembered until they expire: a client sends the same token with every
    request, and checking its signature and claims each time costs more than many requests' own work."""

    def __init__(self, secret: Callable[[], str], issuer: str, *, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._issuer = issuer
        self._max_entries = max_entries
        self._secret_in_use = ""
        # token -> (its caller, when to stop trusting it on the wall clock)
        self._entries: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The token's caller; raises :class:`~modelhub_common.errors.AuthError` as ``verify_token`` does."""
        secret = self._secret()
        if secret != self._secret_in_use:  # a new secret invalidates everything verified with the old one
            self._entries.clear()
            self._secret_in_use = secret
        now = time.time()
        entry = self._entries.get(token)
        if entry is not None and now < entry[1]:
            return entry[0]
        principal = verify_token(token, secret, issuer=self._issuer, leeway_seconds=_LEEWAY_SECONDS)
        # The signature was checked just above; this only reads the expiry back.
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
        if isinstance(expires, int | float):
            if len(self._entries) >= self._max_entries:
                self._entries = {t: e for t, e in self._entries.items() if now < e[1]}
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
            self._entries[token] = (principal, float(expires) + _LEEWAY_SECONDS)
        return principal
