"""The console over plain HTTP against the real registry and gateway: sign-in and its cookie, CSRF refusals,
access rules that stay the registry's, and no token where it could leak."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
from console_kit import PASSWORD, SMOLLM2, Stack, token, unique

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _signin_form(client: httpx.Client) -> str:
    page = client.get("/signin")
    assert page.status_code == 200
    match = CSRF_RE.search(page.text)
    assert match
    return match.group(1)


def signed_in(stack: Stack, *, username: str = "", password: str = "", bearer: str = "") -> httpx.Client:
    client = httpx.Client(base_url=stack.console_url, timeout=60)
    csrf = _signin_form(client)
    form = {"csrf_token": csrf, "username": username, "password": password, "token": bearer}
    response = client.post("/signin", data=form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/models"
    return client


def page_csrf(client: httpx.Client, path: str = "/models") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match
    return match.group(1)


def test_password_sign_in_sets_an_http_only_same_site_cookie_and_shows_the_workspace(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.console_url, timeout=60)
    csrf = _signin_form(client)
    response = client.post("/signin", data={"csrf_token": csrf, "username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "modelhub_session=" in v)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # not prod
    workspace = client.get("/models")
    assert workspace.status_code == 200 and "alice" in workspace.text


def test_wrong_password_is_shown_on_the_sign_in_page(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.console_url, timeout=60)
    csrf = _signin_form(client)
    response = client.post("/signin", data={"csrf_token": csrf, "username": "alice", "password": "not it"})
    assert response.status_code == 401
    assert "wrong username or password" in response.text
    assert client.get("/models").status_code == 303  # still signed out


def test_sign_in_without_its_csrf_token_is_refused(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.console_url, timeout=60)
    _signin_form(client)
    response = client.post("/signin", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


def test_state_changing_requests_without_the_csrf_token_are_refused(stack: Stack) -> None:
    model = stack.create_model("alice", id=unique("csrf"), name="CSRF target")
    client = signed_in(stack, username="alice", password=PASSWORD)
    for data in ({"id": model["id"], "action": "delete"}, {"id": model["id"], "action": "delete", "csrf_token": "x"}):
        refused = client.post("/models/action", data=data)
        assert refused.status_code == 403
        assert "security token" in refused.text
    stream = client.post("/chat/stream", json={"models": ["smollm2:135m"], "text": "hi"})
    assert stream.status_code == 403
    still_there = stack.http.get(
        f"{stack.registry_url}/api/v1/models/{model['id']}", headers={"Authorization": f"Bearer {token()}"}
    )
    assert still_there.status_code == 200
    accepted = client.post(
        "/models/action", data={"id": model["id"], "action": "delete", "csrf_token": page_csrf(client)}
    )
    assert accepted.status_code == 303


def test_another_users_private_model_is_neither_listed_nor_editable(stack: Stack) -> None:
    private = stack.create_model("alice", id=unique("alice-private"), name="Alice private")
    bob = signed_in(stack, bearer=token("bob", "user"))
    grid = bob.get("/models", params={"q": "alice-private", "show_hidden": "true"})
    assert grid.status_code == 200 and private["id"] not in grid.text
    edit = bob.get("/models/edit", params={"id": private["id"]})
    assert edit.status_code == 404
    refused = bob.post("/models/action", data={"id": private["id"], "action": "hide", "csrf_token": page_csrf(bob)})
    assert refused.status_code == 303
    assert "does not exist" in bob.get("/models").text or "not found" in bob.get("/models").text.lower()


def test_the_token_never_reaches_a_page_a_url_or_a_log_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    bearer = token("bob", "user")
    caplog.set_level(logging.DEBUG)
    client = signed_in(stack, bearer=bearer)
    for path in ("/models", "/models/new", "/chat", "/base-models", "/models/import"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert bearer not in response.text
        assert bearer not in str(response.url)
    assert all(bearer not in record.getMessage() and bearer not in str(record.__dict__) for record in caplog.records)


def test_a_token_the_registry_refuses_is_not_a_session(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.console_url, timeout=60)
    csrf = _signin_form(client)
    forged = token("mallory", "admin")[:-4] + "AAAA"
    response = client.post("/signin", data={"csrf_token": csrf, "token": forged})
    assert response.status_code == 401
    assert "does not accept" in response.text


def test_sign_out_ends_the_session(stack: Stack) -> None:
    client = signed_in(stack, bearer=token("bob", "user"))
    assert client.post("/signout", data={"csrf_token": page_csrf(client)}).status_code == 303
    assert client.get("/models").status_code == 303


def test_the_grid_pages_through_the_registrys_cursor_and_filters_by_tag(stack: Stack) -> None:
    owner = unique("carol")
    ids = [f"{owner}-m{n:02d}" for n in range(15)]
    for n, model_id in enumerate(ids):
        stack.create_model(owner, id=model_id, name=f"Paged {n}", meta={"tags": ["even" if n % 2 == 0 else "odd"]})
    client = signed_in(stack, bearer=token(owner, "user"))
    # Searched by the owner's unique prefix: public model files of other tests on the shared stack stay out.
    first = client.get("/models", params={"q": owner})
    shown = re.findall(r'data-model-id="([^"]+)"', first.text)
    assert len(shown) == 12  # the console's page size
    next_url = re.search(r'href="(/models\?[^"]*cursor=[^"]+)" id="next-page"', first.text)
    assert next_url
    second = client.get(next_url.group(1).replace("&amp;", "&"))
    rest = re.findall(r'data-model-id="([^"]+)"', second.text)
    assert sorted(shown + rest) == sorted(ids) and 'id="next-page"' not in second.text
    odd = re.findall(r'data-model-id="([^"]+)"', client.get("/models", params={"tag": "odd", "q": owner}).text)
    assert sorted(odd) == ids[1::2]
    # htmx asks for the grid alone
    partial = client.get("/models", params={"q": "Paged 3"}, headers={"HX-Request": "true", "HX-Target": "grid"})
    assert partial.text.lstrip().startswith('<section id="grid"')
    assert re.findall(r'data-model-id="([^"]+)"', partial.text) == [ids[3]]


def test_deleting_a_model_others_build_on_shows_the_registrys_refusal(stack: Stack) -> None:
    base = stack.create_model("bob", id=unique("bob-base"), name="Bob base")
    stack.create_model("bob", id=unique("bob-derived"), name="Bob derived", base_model_id=base["id"])
    client = signed_in(stack, bearer=token("bob", "user"))
    response = client.post(
        "/models/action", data={"id": base["id"], "action": "delete", "csrf_token": page_csrf(client)}
    )
    assert response.status_code == 303
    page = client.get("/models")
    assert "is the base of" in page.text and base["id"] in page.text


def test_a_disabled_model_leaves_the_default_grid_and_the_picker_but_shows_with_show_hidden(stack: Stack) -> None:
    model = stack.create_model("bob", id=unique("bob-disabled"), name="Bob disabled")
    client = signed_in(stack, bearer=token("bob", "user"))
    done = client.post("/models/action", data={"id": model["id"], "action": "disable", "csrf_token": page_csrf(client)})
    assert done.status_code == 303
    assert f'data-model-id="{model["id"]}"' not in client.get("/models", params={"q": "bob-disabled"}).text
    assert f'value="{model["id"]}"' not in client.get("/chat").text
    shown = client.get("/models", params={"q": "bob-disabled", "show_hidden": "true"}).text
    assert f'data-model-id="{model["id"]}"' in shown and "disabled</span>" in shown and 'data-action="enable"' in shown


def test_in_prod_the_session_cookie_is_secure_and_expires_with_the_session(stack: Stack) -> None:
    from modelhub_console import bootstrap
    from modelhub_console.settings import ConsoleSettings
    from modelhub_devstack.asgi import serve_in_thread

    settings = ConsoleSettings(
        registry_url=stack.registry_url, gateway_grpc=stack.gateway_grpc, port=0, prod=True, session_ttl_seconds=120
    )
    with serve_in_thread(bootstrap.build_app(settings), name="console-prod", log_level="warning") as url:
        client = httpx.Client(base_url=url, timeout=60)
        signin = client.get("/signin")
        assert "Secure" in signin.headers["set-cookie"]  # the sign-in form's CSRF cookie too
        csrf = CSRF_RE.search(signin.text)
        assert csrf
        # httpx keeps Secure cookies away from http://, as a browser would: hand the form's cookie back by hand.
        sent = httpx.Client(base_url=url, timeout=60, cookies={"modelhub_signin_csrf": _cookie(signin)})
        response = sent.post("/signin", data={"csrf_token": csrf.group(1), "token": token("bob", "user")})
        assert response.status_code == 303
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "modelhub_session=" in v)
        assert "Secure" in cookie and "HttpOnly" in cookie
        max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
        assert 0 < max_age <= 120


def _cookie(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def test_export_all_downloads_every_readable_model_as_one_open_webui_array(stack: Stack) -> None:
    owner = unique("dana")
    ids = {stack.create_model(owner, id=f"{owner}-{n}", name=f"Export {n}")["id"] for n in range(3)}
    client = signed_in(stack, bearer=token(owner, "user"))
    response = client.get("/models/export-all")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith('attachment; filename="models-export-')
    exported = response.json()
    assert isinstance(exported, list) and ids <= {item["id"] for item in exported}


def test_details_show_where_each_parameter_comes_from_and_restore_an_earlier_version(stack: Stack) -> None:
    owner = unique("erin")
    base = stack.create_model(owner, id=f"{owner}-base", name="Base file", params={"temperature": 0.2, "top_p": 0.5})
    derived = stack.create_model(
        owner, id=f"{owner}-derived", name="Derived v1", base_model_id=base["id"], params={"temperature": 0.9}
    )
    client = signed_in(stack, bearer=token(owner, "user"))
    csrf = page_csrf(client)
    edited = client.post(
        "/models/save",
        data={
            "csrf_token": csrf,
            "editing": "1",
            "id": derived["id"],
            "name": "Derived v2",
            "base_model_id": base["id"],
            "temperature": "0.9",
        },
    )
    assert edited.status_code == 303, edited.text
    details = client.get("/models/details", params={"id": derived["id"]})
    assert details.status_code == 200
    rows = dict(
        re.findall(r'<tr data-param="([^"]+)"><td>[^<]*</td><td><code>[^<]*</code></td><td>([^<]*)</td>', details.text)
    )
    assert rows["temperature"] == derived["id"] and rows["top_p"] == base["id"]
    assert 'data-version="1"' in details.text and 'data-version="2"' in details.text
    restored = client.post("/models/restore", data={"csrf_token": csrf, "id": derived["id"], "version": "1"})
    assert restored.status_code == 303
    assert "Restored version 1" in client.get(restored.headers["location"]).text
    current = stack.http.get(
        f"{stack.registry_url}/api/v1/models/{derived['id']}", headers={"Authorization": f"Bearer {token()}"}
    ).json()
    assert current["name"] == "Derived v1" and current["version"] == 3


def _turn(client: httpx.Client, csrf: str, models: list[str], text: str, conversation_id: str = "") -> list[dict]:
    events: list[dict] = []
    with client.stream(
        "POST",
        "/chat/stream",
        json={"models": models, "text": text, "conversation_id": conversation_id},
        headers={"X-CSRF-Token": csrf, "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_models_can_be_switched_between_turns_of_one_conversation(stack: Stack) -> None:
    owner = unique("fay")
    helper = stack.create_model(owner, id=f"{owner}-helper", name="Helper", params={"max_tokens": 8})
    client = signed_in(stack, bearer=token(owner, "user"))
    csrf = page_csrf(client, "/chat")
    first = _turn(client, csrf, [SMOLLM2], "Say hi")
    conversation_id = next(e["conversation_id"] for e in first if e["type"] == "turn_started")
    assert any(e["type"] == "answer_done" and e["model_id"] == SMOLLM2 for e in first)
    second = _turn(client, csrf, [helper["id"]], "Say bye", conversation_id)
    assert next(e["conversation_id"] for e in second if e["type"] == "turn_started") == conversation_id
    assert any(e["type"] == "answer_done" and e["model_id"] == helper["id"] for e in second)
    assert second[-1] == {"type": "end"}
