"""Tool steps in a real browser (headless chromium) against the real stack: a tool call of a real MCP server
shows in the transcript live and when the conversation is reopened. Screenshots go to the artefacts
directory. Sharing, images and "Pull X" from the picker are covered over HTTP (test_console_share.py,
test_console_chat_features.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_kit import Stack, browser_sign_in, unique
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_browser_pull import pushed_model  # noqa: F401 - the fixture

from modelhub_devstack.tool_servers import ToolServerEndpoint

WAIT_SECONDS = 180


def _wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, WAIT_SECONDS)


def _css(browser: WebDriver, selector: str) -> Any:
    return _wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))


def _session(browser: WebDriver, stack: Stack) -> httpx.Client:
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    return httpx.Client(base_url=stack.console_url, cookies=cookies, timeout=60)


def _in_picker(browser: WebDriver, stack: Stack, model_ids: list[str]) -> None:
    """Waits until the gateway's catalog (kept current by the registry's events) lists the models."""
    client = _session(browser, stack)
    deadline = time.monotonic() + WAIT_SECONDS
    while not set(model_ids) <= {m["id"] for m in client.get("/chat/models").json()["models"]}:
        assert time.monotonic() < deadline, f"{model_ids} never reached the picker"
        time.sleep(0.2)


def _answer(browser: WebDriver, turn: int, model_id: str) -> Any:
    def found(d: WebDriver) -> Any:
        turns = d.find_elements(By.CSS_SELECTOR, "section.turn")
        if len(turns) <= turn:
            return False
        answers = turns[turn].find_elements(By.CSS_SELECTOR, f'article.answer[data-model-id="{model_id}"]')
        return answers[0] if answers else False

    return _wait(browser).until(found)


def _settled(answer: Any) -> Any:
    return lambda d: answer.get_attribute("data-status") in ("done", "error")


@pytest.fixture
def tool_model(stack: Stack, mcp_tool_server: ToolServerEndpoint) -> str:
    model_id, _ = stack.create_tool_model("alice", unique("alice-tools"), "Echo tools", mcp_tool_server)
    return model_id


def test_a_tool_call_shows_in_the_transcript_live_and_when_reopened(
    stack: Stack, browser: WebDriver, tool_model: str, artefacts: Path
) -> None:
    wait = _wait(browser)
    browser_sign_in(browser, stack, wait)
    _in_picker(browser, stack, [tool_model])
    browser.get(stack.console_url + "/chat")
    Select(_css(browser, "#model-1")).select_by_value(tool_model)
    browser.find_element(By.ID, "message").send_keys("Say hello to Ada.", Keys.ENTER)
    answer = _answer(browser, 0, tool_model)
    wait.until(_settled(answer))
    step = answer.find_element(By.CSS_SELECTOR, "li.tool-step")
    assert step.get_attribute("data-tool") == "echo" and step.get_attribute("data-state") == "ok"
    call = step.find_element(By.CLASS_NAME, "tool-call").text
    assert call.startswith("\u2192 echo({") and "on mcp-" in call
    result = step.find_element(By.CLASS_NAME, "tool-result").text
    assert result.startswith("\u2190 echo: ")
    browser.save_screenshot(str(artefacts / "chat-tools.png"))

    conversation_id = browser.find_element(By.ID, "transcript").get_attribute("data-conversation-id")
    browser.get(stack.console_url + "/chat?conversation=" + conversation_id)
    reopened = _answer(browser, 0, tool_model)
    again = reopened.find_element(By.CSS_SELECTOR, "li.tool-step")
    assert again.find_element(By.CLASS_NAME, "tool-call").text == call
    assert again.find_element(By.CLASS_NAME, "tool-result").text == result
