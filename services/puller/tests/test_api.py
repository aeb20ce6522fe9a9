"""The pull API's rules: who may pull, what may be pulled, and how errors look."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from puller_testkit import Puller, PushedModel
from registry_double import RegistryDouble


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("a/b/c/d", "too many parts"),
        ("../etc/passwd", "not a valid host"),
        ("my model", "no spaces"),
        ("llama3.2:", "tag after ':' is empty"),
    ],
)
def test_invalid_names_are_refused(puller: Puller, model: str, says: str) -> None:
    response = puller.pull(model)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_name" and says in error["message"]


def test_hosts_outside_the_allow_list_are_refused(puller: Puller) -> None:
    response = puller.pull("evil.example.com/team/model:latest")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "host_not_allowed" and "evil.example.com" in error["message"]
    plain = puller.pull("http://registry.ollama.ai/library/llama3.2")
    assert plain.status_code == 403 and "plain http" in plain.json()["error"]["message"]


def test_only_admins_and_pullers_may_pull(puller: Puller) -> None:
    user = {"Authorization": f"Bearer {puller.token('bob', 'user')}"}
    response = puller.pull("llama3.2", headers=user)
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert puller.client.get("/api/v1/pulls", headers=user).status_code == 403
    assert puller.client.get("/api/v1/pulls").status_code == 401


def test_pullers_group_may_pull_and_unknown_models_fail_clearly(puller: Puller, double: RegistryDouble) -> None:
    double.reset()
    member = {"Authorization": f"Bearer {puller.token('carol', 'user', ('pullers',))}"}
    response = puller.pull(f"{double.host}/library/does-not-exist:latest", headers=member)
    assert response.status_code == 202
    pull = puller.wait(response.json()["id"])
    assert pull["state"] == "failed" and pull["error"]["code"] == "model_not_found"
    assert pull["requested_by"] == "carol"


def test_unknown_pull_ids_are_404(puller: Puller) -> None:
    for path in ("/api/v1/pulls/not-a-uuid", "/api/v1/pulls/00000000-0000-0000-0000-000000000000"):
        response = puller.client.get(path, headers=puller.admin)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_size_limit_refuses_big_models(
    make_puller: Callable[..., Puller], double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset()
    puller = make_puller(max_pull_bytes=1024 * 1024)
    pull = puller.wait(puller.start(push_model(megabytes=2, seed=91).name(double.host))["id"])
    assert pull["state"] == "failed" and pull["error"]["code"] == "too_large"


def test_free_space_is_checked_before_downloading(
    make_puller: Callable[..., Puller], double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset()
    puller = make_puller(store_capacity_bytes=8 * 1024 * 1024, free_space_margin_bytes=4 * 1024 * 1024)
    pull = puller.wait(puller.start(push_model(megabytes=6, seed=92).name(double.host))["id"])
    assert pull["state"] == "failed" and pull["error"]["code"] == "insufficient_space"
    assert double.blob_requests() == []  # nothing was fetched


def test_events_stream_as_server_sent_events(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset(bytes_per_second=4 * 1024 * 1024)
    started = puller.start(push_model(megabytes=6, seed=93).name(double.host))
    headers = {**puller.admin, "Accept": "text/event-stream"}
    with puller.client.stream("GET", f"/api/v1/pulls/{started['id']}/events", headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kinds = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]
    assert kinds[0] == "snapshot" and kinds[-1] == "completed"
    assert "progress" in kinds
