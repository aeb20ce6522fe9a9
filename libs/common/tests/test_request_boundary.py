"""The shared HTTP boundary of every service: unstorable text refused, framework errors and outages in the one
error shape. Driven in-process (no server is involved in what is checked here)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from fastapi import APIRouter, Body

from modelhub_common.health import Readiness
from modelhub_common.webapp import create_app


def _app() -> Any:
    app = create_app(title="t", version="0", readiness=Readiness())

    @app.post("/echo")
    async def echo(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return body

    router = APIRouter()  # routes of an included router are matched through it, not the app's own list

    @router.get("/db")
    async def db() -> None:
        raise psycopg.OperationalError("connection refused")

    @router.delete("/db")
    async def db_delete() -> None:
        raise psycopg.OperationalError("connection refused")

    @router.get("/things/export")
    async def export() -> None:
        return None

    @router.get("/things/{thing_id:path}")
    async def thing(thing_id: str) -> None:
        return None

    @router.delete("/things/{thing_id:path}")
    async def delete_thing(thing_id: str) -> None:
        return None

    app.include_router(router)

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    return app


async def _client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_good_bodies_pass_through_unchanged() -> None:
    async with await _client() as client:
        body = {"a": "plain \\u0000 text written with a backslash", "b": ["é", "😀"]}
        response = await client.post("/echo", json=body)
        assert response.status_code == 200 and response.json() == body


async def test_nul_and_lone_surrogates_are_refused_naming_the_field() -> None:
    async with await _client() as client:
        headers = {"Content-Type": "application/json"}
        nul = await client.post("/echo", content='{"x": {"y": ["ok", "a\\u0000b"]}}', headers=headers)
        assert nul.status_code == 422 and nul.json()["error"]["details"][0]["field"] == "x.y[1]"
        surrogate = await client.post("/echo", content='{"name": "\\udc00"}', headers=headers)
        assert surrogate.status_code == 422 and "surrogate" in surrogate.json()["error"]["message"]
        key = await client.post("/echo", content='{"k\\u0000": 1}', headers=headers)
        assert key.status_code == 422 and "key" in key.json()["error"]["message"]
        bad = await client.post("/echo", content=b'{"x": "\xc3"}', headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_body"


async def test_nul_in_the_path_or_the_query_is_refused_naming_where() -> None:
    async with await _client() as client:
        path = await client.get("/items/a%00b")
        assert path.status_code == 422 and path.json()["error"]["details"][0]["field"] == "path"
        query = await client.get("/crash", params={"cursor": "x\u0000"})
        assert query.status_code == 422 and query.json()["error"]["details"][0]["field"] == "query.cursor"
        undecodable = await client.get("/crash?cursor=%ff")
        assert undecodable.status_code == 400 and "UTF-8" in undecodable.json()["error"]["message"]
        fine = await client.get("/crash", params={"cursor": "é"})
        assert fine.status_code == 500  # reached the route (which fails on purpose): nothing was refused


async def test_outages_and_bugs_answer_in_the_shared_shape() -> None:
    async with await _client() as client:
        down = await client.get("/db")
        assert down.status_code == 503 and down.headers["Retry-After"] == "5"
        assert down.json()["error"]["code"] == "dependency_unavailable"
        crash = await client.get("/crash")
        assert crash.status_code == 500 and crash.json()["error"]["code"] == "internal"
        assert "a bug" not in crash.text
        missing = await client.get("/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = await client.delete("/echo")
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
        # Two routes on one path: the 405 names the methods of both, not only the first route's.
        two = await client.post("/db")
        assert two.status_code == 405 and two.headers["Allow"] == "DELETE, GET"
        assert two.json()["error"]["message"] == "POST is not allowed on /db; use DELETE, GET"
        # The most literal path's methods: /things/export is a resource of its own, though a thing's
        # {thing_id:path} route would take the DELETE.
        export = await client.options("/things/export")
        assert export.status_code == 405 and export.headers["Allow"] == "GET"
        one = await client.options("/things/t1")
        assert one.status_code == 405 and one.headers["Allow"] == "DELETE, GET"


async def test_an_openai_compatible_api_gets_its_refusals_in_openais_shape() -> None:
    app = create_app(title="t", version="0", readiness=Readiness(), openai_prefixes=("/v1/",))

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return body

    @app.post("/api/echo")
    async def echo(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return body

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"Content-Type": "application/json"}
        content = '{"messages": [{"role": "user", "content": "a\\u0000b"}]}'
        openai = await client.post("/v1/chat/completions", content=content, headers=headers)
        assert openai.status_code == 400, openai.text
        assert openai.json()["error"]["type"] == "invalid_request_error"
        assert openai.json()["error"]["param"] == "messages[0].content"
        shared = await client.post("/api/echo", content=content, headers=headers)
        assert shared.status_code == 422 and shared.json()["error"]["details"][0]["field"] == "messages[0].content"
        # A body that is not what the route takes (here: none at all) is a 422, in OpenAI's shape there too.
        missing = await client.post("/v1/chat/completions")
        assert missing.status_code == 422, missing.text
        assert missing.json() == {
            "error": {
                "message": "body: Field required",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request",
            }
        }
        assert (await client.post("/api/echo")).json()["error"]["code"] == "invalid_request"


async def test_the_openapi_document_declares_every_error_in_the_shared_shape() -> None:
    app = _app()

    @app.delete("/api/v1/things/{thing_id}", status_code=204)
    async def delete(thing_id: str) -> None:
        return None

    document = app.openapi()
    responses = document["paths"]["/api/v1/things/{thing_id}"]["delete"]["responses"]
    assert sorted(responses) == ["204", "400", "401", "403", "404", "409", "422", "503"]
    assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in responses["503"]["headers"]
    assert "HTTPValidationError" not in str(responses)
    assert "404" not in document["paths"]["/db"]["get"]["responses"]  # outside /api/: left as it was
