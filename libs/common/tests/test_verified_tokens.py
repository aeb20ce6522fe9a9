"""The remembered bearer tokens: remembering one never lets through a token that verification would refuse."""

from __future__ import annotations

import time

import pytest

from modelhub_common.auth import VerifiedTokens, issue_token
from modelhub_common.errors import AuthError

SECRET = "s" * 48


def test_a_token_is_verified_once_and_then_remembered() -> None:
    tokens = VerifiedTokens(lambda: SECRET, "modelhub")
    token = issue_token(SECRET, subject="ana", role="user", groups=["g1"], ttl_seconds=600)
    first = tokens.verify(token)
    assert (first.subject, first.role, first.groups) == ("ana", "user", frozenset({"g1"}))
    assert tokens.verify(token) is first


def test_a_changed_secret_forgets_every_remembered_token() -> None:
    secret = [SECRET]
    tokens = VerifiedTokens(lambda: secret[0], "modelhub")
    token = issue_token(SECRET, subject="ana", role="user", ttl_seconds=600)
    tokens.verify(token)
    secret[0] = "t" * 48
    with pytest.raises(AuthError, match="signature"):
        tokens.verify(token)


def test_expired_tampered_and_foreign_tokens_are_refused_next_to_a_remembered_one() -> None:
    tokens = VerifiedTokens(lambda: SECRET, "modelhub")
    good = issue_token(SECRET, subject="ana", role="admin", ttl_seconds=600)
    tokens.verify(good)
    expired = issue_token(SECRET, subject="ana", role="admin", ttl_seconds=10, now=time.time() - 3600)
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(expired)
    with pytest.raises(AuthError):
        tokens.verify(good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1])
    with pytest.raises(AuthError, match="issued by someone else"):
        tokens.verify(issue_token(SECRET, subject="ana", role="admin", ttl_seconds=600, issuer="elsewhere"))


def test_a_full_cache_keeps_working() -> None:
    tokens = VerifiedTokens(lambda: SECRET, "modelhub", max_entries=3)
    issued = [issue_token(SECRET, subject=f"u{n}", role="user", ttl_seconds=600) for n in range(10)]
    assert [tokens.verify(t).subject for t in issued] == [f"u{n}" for n in range(10)]
