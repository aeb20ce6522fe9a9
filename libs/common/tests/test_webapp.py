from typing import Annotated

from fastapi import Depends
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from modelhub_common.auth import Principal, issue_token
from modelhub_common.errors import DependencyError, ModelhubError
from modelhub_common.health import Readiness
from modelhub_common.webapp import create_app, principal_dependency

SECRET = "k" * 32


class Body(BaseModel):
    name: str = Field(max_length=3)


class NotFound(ModelhubError):
    code = "not_found"
    http_status = 404


def make_client(ready_check_fails: bool = False) -> TestClient:
    readiness = Readiness(started=True)

    async def check() -> None:
        if ready_check_fails:
            raise ConnectionError("down")

    readiness.add("db", check)
    app = create_app(title="t", version="0", readiness=readiness)
    current = principal_dependency(lambda: SECRET)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(current)]) -> dict[str, str]:
        return {"sub": principal.subject}

    @app.post("/items")
    async def items(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("model 'x' does not exist")

    @app.get("/down")
    async def down() -> None:
        raise DependencyError("cannot reach PostgreSQL")

    return TestClient(app)


def test_bearer_token_is_required_and_checked() -> None:
    client = make_client()
    assert client.get("/me").status_code == 401
    bad = client.get("/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthenticated"
    token = issue_token(SECRET, subject="alice", role="user", ttl_seconds=60)
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).json() == {"sub": "alice"}


def test_errors_become_json_with_code_and_status() -> None:
    client = make_client()
    response = client.get("/missing")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "model 'x' does not exist"}}
    assert client.get("/down").status_code == 503


def test_validation_errors_name_the_field() -> None:
    response = make_client().post("/items", json={"name": "toolong"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["details"][0]["field"] == "name"
    assert "name:" in error["message"]


def test_health_and_readiness() -> None:
    assert make_client().get("/healthz").json() == {"status": "ok"}
    assert make_client().get("/readyz").status_code == 200
    failing = make_client(ready_check_fails=True).get("/readyz")
    assert failing.status_code == 503 and failing.json()["checks"]["db"].startswith("failing")
