"""Share, tools, images and "Pull X" from the chat picker in a real browser (headless chromium) against the real
stack: the owner shares a model file with a user and makes it public from the keyboard; a tool call of a real
MCP server shows in the transcript live and when the conversation is reopened; an image goes to a vision
model file while the second model's column shows the gateway's refusal; a name typed into the picker is
pulled with its progress and then chosen, and a slow pull started there is cancelled. Screenshots go to the
artefacts directory.

Every wait looks its element up afresh (a form post replaces the whole page, so an element found before it
goes stale) and ends on a state the page marks (``data-status``, ``data-busy``, ``data-state``), never on
a guess of how long something takes."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_kit import SMOLLM2, Stack, admin_headers, browser_sign_in, unique
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from modelhub_devstack.tool_servers import ToolServerEndpoint

WAIT_SECONDS = 180
ENDED = ("completed", "failed", "cancelled", "refused")


def _wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    # A condition that found an element of a page just replaced by the next one tries again.
    return WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,))


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


def _fits_a_phone(browser: WebDriver) -> None:
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{browser.current_url} scrolls sideways by {overflow} px at phone width"


def _text(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def test_the_owner_shares_a_model_file_from_the_keyboard(stack: Stack, browser: WebDriver, artefacts: Path) -> None:
    model = stack.create_model("alice", id=unique("alice-share"), name="Share me")
    wait = _wait(browser)
    browser_sign_in(browser, stack, wait)
    browser.get(stack.console_url + "/models?q=" + model["id"])
    _css(browser, f'li.card[data-model-id="{model["id"]}"] a[aria-label="Share Share me"]').send_keys(Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element((By.ID, "share-title"), "Share Share me"))
    assert _css(browser, "#visibility").get_attribute("data-public") == "false"
    assert browser.find_elements(By.ID, "no-grants")

    # Each submit below posts the form and loads the page anew: every check waits for what only the new page shows.
    kind = browser.find_element(By.ID, "grant-type")
    kind.send_keys("user")
    permission = browser.find_element(By.ID, "grant-permission")
    permission.send_keys(Keys.DOWN)  # from "read" to "read and change"
    assert (kind.get_attribute("value"), permission.get_attribute("value")) == ("user", "write")
    browser.find_element(By.ID, "grant-id").send_keys("bob", Keys.ENTER)  # submitted from the keyboard
    row = _css(browser, 'tr[data-grant="user:bob"]')
    assert row.get_attribute("data-permission") == "write" and "read and change" in row.text
    assert "User bob can now read and change it." in _text(browser, ".flash-ok")

    _css(browser, "#make-public").send_keys(Keys.ENTER)
    _css(browser, '#visibility[data-public="true"]')
    assert "Every signed-in user can now read it." in _text(browser, ".flash-ok")
    assert browser.find_elements(By.ID, "make-private")
    assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-grant="user:bob"]')  # the grant stays
    browser.save_screenshot(str(artefacts / "share.png"))
    browser.set_window_size(390, 844)
    try:
        _fits_a_phone(browser)
        browser.save_screenshot(str(artefacts / "share-phone.png"))
    finally:
        browser.set_window_size(1280, 900)

    _css(browser, 'button[aria-label="Stop sharing with user bob"]').send_keys(Keys.ENTER)
    _css(browser, "#no-grants")
    assert "Removed the grant of bob." in _text(browser, ".flash-ok")
    stored = stack.http.get(f"{stack.registry_url}/api/v1/models/{model['id']}", headers=admin_headers()).json()
    assert stored["access"] == {"public_read": True, "grants": []}


def _png(path: Path, size: int) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _loaded(browser: WebDriver, selector: str, width: int) -> None:
    """Waits until the image ``selector`` finds has loaded and is ``width`` pixels wide."""
    script = "var i = document.querySelector(arguments[0]); return i && i.complete ? i.naturalWidth : -1"
    _wait(browser).until(lambda d: d.execute_script(script, selector) == width)


def _turn_ended(browser: WebDriver) -> None:
    """Waits until the page has read the turn's whole stream (``send`` marks the transcript busy until then)."""
    _wait(browser).until(lambda d: d.find_element(By.ID, "transcript").get_attribute("data-busy") == "false")


def test_an_image_goes_to_the_vision_model_and_the_other_model_says_it_cannot_read_it(
    stack: Stack, browser: WebDriver, tmp_path: Path, artefacts: Path
) -> None:
    # A context large enough for the image's share of the prompt, so the image gets past the gateway to the
    # model's backend: the embedded llama.cpp one, which reads no images and says so (a real vision backend
    # would answer). The second model has no vision, and the gateway itself refuses the image for it.
    vision = stack.create_model(
        "alice", id=unique("alice-eyes"), name="Eyes", meta={"capabilities": {"vision": True}}, params={"num_ctx": 1024}
    )["id"]
    picture = _png(tmp_path / "red.png", 16)
    wait = _wait(browser)
    browser_sign_in(browser, stack, wait)
    _in_picker(browser, stack, [vision])
    browser.get(stack.console_url + "/chat")
    Select(_css(browser, "#model-1")).select_by_value(SMOLLM2)
    assert not browser.find_element(By.ID, "attach").is_displayed()  # no chosen model reads images
    Select(browser.find_element(By.ID, "model-1")).select_by_value(vision)
    Select(browser.find_element(By.ID, "model-2")).select_by_value(SMOLLM2)
    wait.until(lambda d: d.find_element(By.ID, "attach").is_displayed())
    assert "cannot read images" in browser.find_element(By.ID, "images-help").text
    browser.find_element(By.ID, "images").send_keys(str(picture))
    _loaded(browser, "#image-previews img", 16)
    # Sent with Enter: a click aims at coordinates, and the composer is laid out again as its preview loads.
    browser.find_element(By.ID, "message").send_keys("What colour is this?", Keys.ENTER)
    _css(browser, "section.turn .user-images img")
    _turn_ended(browser)
    problems = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "section.turn .flash-error")]
    assert not problems, problems
    blind, seeing = _answer(browser, 0, SMOLLM2), _answer(browser, 0, vision)
    assert blind.get_attribute("data-status") == "error"
    assert "does not have the vision capability" in blind.find_element(By.CLASS_NAME, "answer-note").text
    assert seeing.get_attribute("data-status") == "error"
    assert seeing.find_element(By.CLASS_NAME, "answer-note").text == "the local backend cannot read images"
    browser.save_screenshot(str(artefacts / "chat-image.png"))

    conversation_id = browser.find_element(By.ID, "transcript").get_attribute("data-conversation-id")
    browser.get(stack.console_url + "/chat?conversation=" + conversation_id)
    _loaded(browser, "section.turn .user-images img", 16)  # served from the console's origin
    assert "cannot read images" in _answer(browser, 0, SMOLLM2).find_element(By.CLASS_NAME, "answer-note").text


def _pull_state(browser: WebDriver) -> str:
    return str(browser.find_element(By.ID, "chat-pull-progress").get_attribute("data-state"))


def _offer_pull(browser: WebDriver, name: str) -> None:
    """Types a known name (which chooses that model, no pull offered), then ``name`` (which offers "Pull name")."""
    finder = _css(browser, "#model-find")
    finder.send_keys(SMOLLM2)
    assert browser.find_element(By.ID, "model-1").get_attribute("value") == SMOLLM2  # a known name chooses it
    assert not browser.find_element(By.ID, "chat-pull").is_displayed()
    finder.clear()
    finder.send_keys(name)
    _wait(browser).until(lambda d: d.find_element(By.ID, "chat-pull").is_displayed())
    assert browser.find_element(By.ID, "chat-pull").text == f"Pull {name}"


def test_a_name_typed_into_the_chat_picker_is_pulled_and_chosen(
    stack: Stack, browser: WebDriver, pushed_model: str, artefacts: Path
) -> None:
    wait = _wait(browser)
    browser_sign_in(browser, stack, wait)
    browser.get(stack.console_url + "/chat")
    _offer_pull(browser, pushed_model)
    browser.find_element(By.ID, "model-find").send_keys(Keys.ENTER)  # Enter pulls, as the button does
    wait.until(lambda d: _pull_state(d) in ENDED)
    assert _pull_state(browser) == "completed", browser.find_element(By.ID, "chat-pull-label").text
    assert browser.find_element(By.ID, "chat-pull-bar").get_attribute("value") == "100"
    # A pull from a host other than Ollama's keeps the whole name as the base model's id.
    wait.until(lambda d: d.find_element(By.ID, "model-1").get_attribute("value") == pushed_model)
    assert "is ready and chosen" in browser.find_element(By.ID, "model-find-status").text
    assert not browser.find_element(By.ID, "chat-pull").is_displayed()
    browser.save_screenshot(str(artefacts / "chat-pull.png"))


def test_a_pull_started_from_the_chat_picker_is_cancelled(stack: Stack, browser: WebDriver, slow_model: str) -> None:
    wait = _wait(browser)
    browser_sign_in(browser, stack, wait)
    browser.get(stack.console_url + "/chat")
    _offer_pull(browser, slow_model)
    browser.find_element(By.ID, "chat-pull").click()
    # Bytes arrive through the throttled registry front, so the pull is running and far from done.
    wait.until(
        lambda d: (
            _pull_state(d) in ENDED
            or (_pull_state(d) == "running" and int(d.find_element(By.ID, "chat-pull-bar").get_attribute("value")) > 0)
        )
    )
    assert _pull_state(browser) == "running", browser.find_element(By.ID, "chat-pull-label").text
    assert not browser.find_element(By.ID, "chat-pull").is_enabled()  # one pull at a time from the picker
    browser.find_element(By.ID, "chat-pull-cancel").send_keys(Keys.ENTER)  # the layer rows above it may move it
    wait.until(lambda d: _pull_state(d) in ENDED)
    label = browser.find_element(By.ID, "chat-pull-label").text
    assert _pull_state(browser) == "cancelled", label
    assert label == f"{slow_model}: cancelled"
    assert int(browser.find_element(By.ID, "chat-pull-bar").get_attribute("value")) < 100
    assert not browser.find_element(By.ID, "chat-pull-cancel").is_enabled()
    assert browser.find_element(By.ID, "chat-pull").is_enabled()  # another pull can start
    assert browser.find_element(By.ID, "model-1").get_attribute("value") == SMOLLM2  # nothing new was chosen
