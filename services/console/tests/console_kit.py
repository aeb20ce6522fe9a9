"""What the console's tests share besides fixtures (a module name of its own: ``conftest`` is ambiguous in a
full run)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelhub_common.auth import issue_token

SECRET = "console-test-secret-" + "z" * 32
MODELS_BUCKET = "modelhub-models"
SMOLLM2 = "smollm2:135m"
SMOLLM2_PARAMS = {
    "temperature": 0,
    "seed": 42,
    "max_tokens": 16,
    "num_ctx": 512,
    "system": "You are a helpful assistant.",
}
PASSWORD = "a long password for alice"
REPO_ROOT = Path(__file__).resolve().parents[3]


def token(subject: str = "root", role: str = "admin") -> str:
    return issue_token(SECRET, subject=subject, role=role, ttl_seconds=3600)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {token()}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class Stack:
    registry_url: str
    gateway_grpc: str
    console_url: str
    http: httpx.Client
    oci_registry_url: str
    rag_url: str
    # The puller tests' RegistryDouble in front of the OCI registry; ``.reset(bytes_per_second=...)`` throttles it.
    slow_registry: Any = None

    def create_model(self, owner: str, **body: Any) -> dict[str, Any]:
        response = self.http.post(
            f"{self.registry_url}/api/v1/models",
            json={"base_model_id": SMOLLM2, **body},
            headers={"Authorization": f"Bearer {token(owner, 'user')}"},
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def create_tool_model(self, owner: str, model_id: str, name: str, tool_server: Any) -> tuple[str, str]:
        """Registers ``tool_server`` (a real MCP server, bearer auth) and a model file of ``owner`` that always
        calls its ``echo`` tool; returns the model's id and the tool server's id."""
        server_id = f"mcp-{uuid.uuid4().hex[:8]}"
        response = self.http.post(
            f"{self.registry_url}/api/v1/tool-servers",
            json={
                "id": server_id,
                "name": f"{name} tools",
                "kind": "mcp",
                "url": tool_server.url,
                "auth": "bearer",
                "secret": tool_server.token,
            },
            headers=admin_headers(),
        )
        assert response.status_code == 201, response.text
        model = self.create_model(
            owner,
            id=model_id,
            name=name,
            meta={"toolIds": [server_id]},
            params={"tool_choice": "echo", "max_tokens": 48},
        )
        return str(model["id"]), server_id


def browser_sign_in(browser: Any, stack: Stack, wait: Any) -> None:
    """Signs alice in with her password in a fresh browser session (``wait``: a WebDriverWait of ``browser``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.delete_all_cookies()
    browser.get(stack.console_url + "/signin")
    wait.until(ec.presence_of_element_located((By.ID, "username"))).send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin-password").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Models"))
