"""Password sign-in: argon2 hashes set by admins, the registry's own bearer token back, a per-address rate limit
and a lock-out after repeated failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from modelhub_common.auth import verify_token
from modelhub_registry.service_layer.passwords import AttemptWindow

if TYPE_CHECKING:
    from conftest import Registry

PASSWORD = "correct horse battery staple"


def _add_user(reg: Registry, user_id: str, role: str = "user") -> None:
    response = reg.client.post("/api/v1/users", json={"id": user_id, "name": user_id, "role": role}, headers=reg.admin)
    assert response.status_code == 201, response.text
    response = reg.client.put(f"/api/v1/users/{user_id}/password", json={"password": PASSWORD}, headers=reg.admin)
    assert response.status_code == 204, response.text


def test_login_returns_a_token_the_services_accept_and_the_hash_is_argon2(registry: Registry) -> None:
    _add_user(registry, "alice")
    response = registry.client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    principal = verify_token(body["token"], registry.settings.jwt_secret.get_secret_value())
    assert (principal.subject, principal.role) == ("alice", "user")
    models = registry.client.get("/api/v1/models", headers={"Authorization": f"Bearer {body['token']}"})
    assert models.status_code == 200
    with psycopg.connect(registry.settings.database_url.get_secret_value()) as conn:
        row = conn.execute("SELECT password_hash FROM user_passwords WHERE user_id = 'alice'").fetchone()
    assert row is not None and row[0].startswith("$argon2id$") and PASSWORD not in row[0]


def test_wrong_password_and_unknown_user_get_the_same_answer(registry: Registry) -> None:
    _add_user(registry, "bob")
    wrong = registry.client.post("/api/v1/auth/login", json={"username": "bob", "password": "nope"})
    unknown = registry.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "bad_credentials"


def test_only_admins_set_passwords_and_short_ones_are_refused(registry: Registry) -> None:
    _add_user(registry, "carol")
    as_carol = registry.client.put(
        "/api/v1/users/carol/password", json={"password": "x" * 20}, headers=registry.as_user("carol")
    )
    assert as_carol.status_code == 403
    short = registry.client.put("/api/v1/users/carol/password", json={"password": "short"}, headers=registry.admin)
    assert short.status_code == 422
    assert short.json()["error"]["details"][0]["field"] == "password"
    missing = registry.client.put("/api/v1/users/ghost/password", json={"password": "x" * 20}, headers=registry.admin)
    assert missing.status_code == 404


def test_account_locks_after_the_configured_failures_and_an_admin_reset_unlocks(
    make_registry: Callable[..., Registry],
) -> None:
    reg = make_registry(login_max_failures=3, login_lockout_seconds=600)
    _add_user(reg, "dave")
    for _ in range(3):
        assert reg.client.post("/api/v1/auth/login", json={"username": "dave", "password": "bad"}).status_code == 401
    locked = reg.client.post("/api/v1/auth/login", json={"username": "dave", "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "account_locked"
    assert locked.json()["error"]["details"]["retry_after_seconds"] > 0
    reset = reg.client.put("/api/v1/users/dave/password", json={"password": PASSWORD}, headers=reg.admin)
    assert reset.status_code == 204
    assert reg.client.post("/api/v1/auth/login", json={"username": "dave", "password": PASSWORD}).status_code == 200


def test_one_address_is_rate_limited(make_registry: Callable[..., Registry]) -> None:
    reg = make_registry(login_attempts_per_minute=2)
    _add_user(reg, "erin")
    for _ in range(2):
        assert reg.client.post("/api/v1/auth/login", json={"username": "erin", "password": PASSWORD}).status_code == 200
    limited = reg.client.post("/api/v1/auth/login", json={"username": "erin", "password": PASSWORD})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "too_many_attempts"


def test_attempt_window_slides() -> None:
    window = AttemptWindow(2)
    assert window.admit("a", now=0) == 0
    assert window.admit("a", now=1) == 0
    assert window.admit("a", now=2) > 0
    assert window.admit("b", now=2) == 0
    assert window.admit("a", now=61) == 0
