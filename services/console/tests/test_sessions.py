"""Sessions: expiry (the console's own limit, or the token's, whichever is first) and the CSRF comparison."""

from __future__ import annotations

from modelhub_common.auth import issue_token
from modelhub_console.sessions import SessionStore

SECRET = "s" * 40


def test_a_session_expires_after_its_ttl() -> None:
    store = SessionStore(ttl_seconds=600, max_sessions=10)
    session = store.create(issue_token(SECRET, subject="a", role="user", ttl_seconds=3600, now=1000), now=1000)
    assert store.get(session.id, now=1599) is session
    assert store.get(session.id, now=1600) is None
    assert store.get(session.id, now=1000) is None  # gone for good


def test_a_session_ends_when_its_token_does() -> None:
    store = SessionStore(ttl_seconds=3600, max_sessions=10)
    session = store.create(issue_token(SECRET, subject="a", role="admin", ttl_seconds=60, now=1000), now=1000)
    assert (session.subject, session.role, session.expires_at) == ("a", "admin", 1060)
    assert store.get(session.id, now=1061) is None


def test_the_oldest_sessions_are_dropped_beyond_the_limit() -> None:
    store = SessionStore(ttl_seconds=600, max_sessions=2)
    first, second, third = (store.create(issue_token(SECRET, subject=s, role="user", ttl_seconds=600)) for s in "abc")
    assert store.get(first.id) is None and store.get(second.id) and store.get(third.id)


def test_csrf_tokens_must_match_exactly() -> None:
    session = SessionStore(600, 10).create(issue_token(SECRET, subject="a", role="user", ttl_seconds=600))
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches("") and not session.csrf_matches("x")
