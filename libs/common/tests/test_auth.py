import time

import jwt
import pytest

from modelhub_common.auth import Principal, issue_token, parse_authorization_header, verify_token
from modelhub_common.errors import AuthError, PermissionDeniedError

SECRET = "s" * 40


def test_round_trip_keeps_subject_role_and_groups() -> None:
    token = issue_token(SECRET, subject="alice", role="user", groups=["ml", "pullers"], ttl_seconds=60)
    principal = verify_token(token, SECRET)
    assert principal == Principal("alice", "user", frozenset({"ml", "pullers"}))
    assert principal.in_any_group(["pullers"]) and not principal.is_admin


def test_expired_token_is_refused_with_a_clear_message() -> None:
    token = issue_token(SECRET, subject="a", role="user", ttl_seconds=1, now=time.time() - 3600)
    with pytest.raises(AuthError, match="expired"):
        verify_token(token, SECRET)


def test_other_key_other_issuer_and_garbage_are_refused() -> None:
    token = issue_token(SECRET, subject="a", role="admin", ttl_seconds=60)
    with pytest.raises(AuthError, match="signature"):
        verify_token(token, "x" * 40)
    with pytest.raises(AuthError, match="issued by someone else"):
        verify_token(issue_token(SECRET, subject="a", role="user", ttl_seconds=60, issuer="evil"), SECRET)
    with pytest.raises(AuthError, match="malformed"):
        verify_token("not-a-jwt", SECRET)


def test_none_algorithm_and_unknown_role_are_refused() -> None:
    unsigned = jwt.encode({"sub": "a", "exp": time.time() + 60, "iat": time.time(), "iss": "modelhub"}, None, "none")
    with pytest.raises(AuthError):
        verify_token(unsigned, SECRET)
    forged = jwt.encode(
        {"sub": "a", "role": "root", "exp": time.time() + 60, "iat": time.time(), "iss": "modelhub"}, SECRET
    )
    with pytest.raises(AuthError, match="unknown role"):
        verify_token(forged, SECRET)


def test_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(AuthError, match="at least 32 bytes"):
        issue_token("short", subject="a", role="user", ttl_seconds=60)


def test_authorization_header_parsing() -> None:
    assert parse_authorization_header("Bearer abc") == "abc"
    assert parse_authorization_header("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(AuthError):
            parse_authorization_header(bad)


def test_require_admin() -> None:
    Principal("root", "admin").require_admin()
    with pytest.raises(PermissionDeniedError):
        Principal("bob", "user").require_admin()
