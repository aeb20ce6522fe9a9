"""Signed-in sessions, kept in this process: a random id in an HttpOnly cookie maps to the user's bearer
token, a CSRF token and an expiry. The token never reaches the browser, a URL or a log line.

Sessions live in memory, so a restart signs everybody out and replicas need sticky routing (deploy/k8s sets
``sessionAffinity: ClientIP``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

COOKIE = "modelhub_session"


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    subject: str
    role: str
    csrf: str
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf, sent or "")


def token_claims(token: str) -> tuple[str, str, float | None]:
    """Subject, role and expiry, read from a token the registry has just accepted (the console holds no key; the
    services verify every call themselves)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return "", "user", None
    expires = claims.get("exp")
    return str(claims.get("sub", "")), str(claims.get("role", "user")), float(expires) if expires else None


class SessionStore:
    def __init__(self, ttl_seconds: int, max_sessions: int) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, token: str, now: float | None = None) -> Session:
        moment = time.time() if now is None else now
        subject, role, token_expiry = token_claims(token)
        expires = moment + self.ttl_seconds
        if token_expiry is not None:
            expires = min(expires, token_expiry)
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            subject=subject,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires_at=expires,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if (time.time() if now is None else now) >= session.expires_at:
            del self._sessions[session_id]
            return None
        return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)
