"""The console in a real browser (headless chromium) against the real registry and gateway: sign in, build a
model file, see it in the grid, a field error, clone and hide, export and re-import with a dry run, and two
models answering side by side with arrows between sibling answers. Screenshots go to the artefacts directory.

The tests of this module run in order and share one browser session, as a user's visit would."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from console_kit import PASSWORD, SMOLLM2, Stack, token
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc

# Generous: waiting is not measured, only what appears in the end is asserted.
WAIT_SECONDS = 180
MODEL_ID = "python-tutor"
# What one test leaves for the next (the tests of this module are one visit, in order).
VISIT: dict[str, str] = {}


@pytest.fixture(scope="module")
def page(stack: Stack, browser: WebDriver) -> WebDriver:
    browser.delete_all_cookies()
    return browser


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_SECONDS)


def css(driver: WebDriver, selector: str) -> Any:
    return wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))


def go(driver: WebDriver, stack: Stack, path: str) -> None:
    driver.get(stack.console_url + path)


def card(driver: WebDriver, model_id: str) -> Any:
    return css(driver, f'li.card[data-model-id="{model_id}"]')


def shot(driver: WebDriver, artefacts: Path, name: str) -> None:
    driver.save_screenshot(str(artefacts / name))


def session_client(driver: WebDriver, stack: Stack) -> httpx.Client:
    """An HTTP client holding the browser's session cookie (downloads are checked through it)."""
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    return httpx.Client(base_url=stack.console_url, cookies=cookies, timeout=60)


def test_sign_in_with_a_password(page: WebDriver, stack: Stack, artefacts: Path) -> None:
    go(page, stack, "/models")
    css(page, "#username").send_keys("alice")
    page.find_element(By.ID, "password").send_keys(PASSWORD)
    page.find_element(By.ID, "signin-password").click()
    wait(page).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Models"))
    assert "alice" in page.find_element(By.CLASS_NAME, "who").text
    session = next(c for c in page.get_cookies() if c["name"] == "modelhub_session")
    assert session["httpOnly"] is True and session["sameSite"] == "Lax"


def test_create_a_model_file_with_an_avatar_and_two_suggestions(
    page: WebDriver, stack: Stack, artefacts: Path, tmp_path: Path
) -> None:
    avatar = tmp_path / "avatar.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (36, 87, 197)).save(buffer, format="PNG")
    avatar.write_bytes(buffer.getvalue())
    go(page, stack, "/models")
    css(page, "#new-model").click()
    css(page, "#id").send_keys(MODEL_ID)
    fields = {
        "name": "Python Tutor",
        "base_model_id": SMOLLM2,
        "description": "Explains Python simply",
        "system": "You explain Python simply.",
        "max_tokens": "24",
        "tags": "python, teaching",
        "suggestions": "What is a list?\nExplain a for loop",
    }
    for name, value in fields.items():
        page.find_element(By.ID, name).send_keys(value)
    page.find_element(By.ID, "avatar").send_keys(str(avatar))
    wait(page).until(lambda d: d.find_element(By.ID, "avatar-preview").get_attribute("hidden") is None)
    page.find_element(By.ID, "save-model").click()
    found = card(page, MODEL_ID)
    assert "Python Tutor" in found.text and "Explains Python simply" in found.text and "on smollm2:135m" in found.text
    assert {t.text for t in found.find_elements(By.CLASS_NAME, "tag")} == {"python", "teaching"}
    image = found.find_element(By.CSS_SELECTOR, "img.avatar")
    wait(page).until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0)
    shot(page, artefacts, "workspace.png")
    stored = stack.http.get(
        f"{stack.registry_url}/api/v1/models/{MODEL_ID}", headers={"Authorization": f"Bearer {token()}"}
    ).json()
    prompts = [p["content"] for p in stored["meta"]["suggestion_prompts"]]
    assert prompts == ["What is a list?", "Explain a for loop"]


def test_a_bad_temperature_is_shown_next_to_its_field(page: WebDriver, stack: Stack, artefacts: Path) -> None:
    go(page, stack, f"/models/edit?id={MODEL_ID}")
    temperature = css(page, "#temperature")
    temperature.clear()
    temperature.send_keys("7")
    page.find_element(By.ID, "save-model").click()
    error = css(page, "#temperature-error")
    assert "2" in error.text  # the registry's own rule: less than or equal to 2
    assert page.find_element(By.ID, "temperature").get_attribute("aria-invalid") == "true"
    assert page.find_element(By.ID, "name").get_attribute("value") == "Python Tutor"  # the form keeps its values
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", error)
    shot(page, artefacts, "editor.png")
    fixed = page.find_element(By.ID, "temperature")
    fixed.clear()
    fixed.send_keys("0")
    page.find_element(By.ID, "save-model").click()
    css(page, ".flash-ok")


def test_clone_then_hide_leaves_the_chat_picker_but_not_the_workspace(page: WebDriver, stack: Stack) -> None:
    go(page, stack, "/models")
    card(page, MODEL_ID).find_element(By.CSS_SELECTOR, 'button[data-action="clone"]').click()
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash-ok"), f"{MODEL_ID}-clone"))
    clone = card(page, f"{MODEL_ID}-clone")
    assert "Python Tutor (Clone)" in clone.text
    clone.find_element(By.CSS_SELECTOR, 'button[data-action="hide"]').click()
    css(page, ".flash-ok")
    assert not page.find_elements(By.CSS_SELECTOR, f'li.card[data-model-id="{MODEL_ID}-clone"]')
    go(page, stack, "/chat")
    options = {o.get_attribute("value") for o in css(page, "#model-1").find_elements(By.TAG_NAME, "option")}
    assert MODEL_ID in options and f"{MODEL_ID}-clone" not in options
    go(page, stack, "/models")
    css(page, "#show_hidden").click()
    hidden = card(page, f"{MODEL_ID}-clone")  # htmx swaps the grid in
    assert "hidden" in hidden.find_element(By.CLASS_NAME, "badge").text


def test_export_then_import_with_a_dry_run(page: WebDriver, stack: Stack, tmp_path: Path) -> None:
    with session_client(page, stack) as client:
        exported = client.get("/models/export-one", params={"id": MODEL_ID})
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    items = exported.json()
    assert isinstance(items, list) and items[0]["id"] == MODEL_ID
    items[0]["id"] = f"{MODEL_ID}-imported"
    items[0]["name"] = "Python Tutor (imported)"
    upload = tmp_path / "tutor-export.json"
    upload.write_text(json.dumps(items))
    go(page, stack, "/models/import")
    css(page, "#file").send_keys(str(upload))
    page.find_element(By.ID, "dry-run").click()
    assert f"{MODEL_ID}-imported" in css(page, "#would-create").text
    go(page, stack, "/models?q=imported")
    assert not page.find_elements(By.CSS_SELECTOR, f'li.card[data-model-id="{MODEL_ID}-imported"]')  # dry run
    go(page, stack, "/models/import")
    css(page, "#file").send_keys(str(upload))
    page.find_element(By.ID, "dry-run").click()
    css(page, "#apply-import").click()
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash-ok"), "1 created"))
    card(page, f"{MODEL_ID}-imported")


def _answers(page: WebDriver, turn: int) -> list[Any]:
    turns = page.find_elements(By.CSS_SELECTOR, "section.turn")
    return turns[turn].find_elements(By.CSS_SELECTOR, "article.answer") if len(turns) > turn else []


def _all_done(page: WebDriver, turn: int, count: int) -> Callable[[WebDriver], bool]:
    def check(_: WebDriver) -> bool:
        answers = _answers(page, turn)
        return len(answers) == count and all(a.get_attribute("data-status") in ("done", "error") for a in answers)

    return check


def test_two_models_answer_side_by_side_and_arrows_choose_the_answer_to_continue_from(
    page: WebDriver, stack: Stack, artefacts: Path
) -> None:
    go(page, stack, "/chat")
    Select(css(page, "#model-1")).select_by_value(MODEL_ID)
    suggestions = [b.text for b in page.find_elements(By.CSS_SELECTOR, "#suggestions button")]
    assert suggestions == ["What is a list?", "Explain a for loop"]
    Select(page.find_element(By.ID, "model-2")).select_by_value(SMOLLM2)
    page.find_element(By.ID, "message").send_keys("What is the capital of France?")
    page.find_element(By.ID, "send").click()
    wait(page).until(_all_done(page, 0, 2))
    first = _answers(page, 0)
    assert [a.get_attribute("data-model-id") for a in first] == [MODEL_ID, SMOLLM2]
    for answer in first:
        assert answer.get_attribute("data-status") == "done", answer.text
        assert answer.find_element(By.CLASS_NAME, "answer-text").text.strip()
        assert int(answer.get_attribute("data-deltas") or 0) > 1  # it arrived in pieces, not in one block
    shot(page, artefacts, "chat.png")

    # Regenerate the second model's answer: a sibling; the arrow goes back to the first and selects it.
    second = first[1]
    original_id = second.get_attribute("data-message-id")
    second.find_element(By.CLASS_NAME, "regenerate").click()
    wait(page).until(lambda d: second.find_element(By.CLASS_NAME, "sibling-count").text == "2/2")
    wait(page).until(
        lambda d: (
            second.get_attribute("data-status") == "done"
            and page.find_element(By.ID, "transcript").get_attribute("data-busy") == "false"
        )
    )
    regenerated_id = second.get_attribute("data-message-id")
    assert regenerated_id != original_id
    second.find_element(By.CLASS_NAME, "sibling-prev").click()
    wait(page).until(
        lambda d: d.find_element(By.ID, "transcript").get_attribute("data-current-message-id") == original_id
    )
    assert second.find_element(By.CLASS_NAME, "sibling-count").text == "1/2"
    conversation_id = page.find_element(By.ID, "transcript").get_attribute("data-conversation-id")

    page.find_element(By.ID, "message").send_keys("And of Italy?")
    page.find_element(By.ID, "send").click()
    wait(page).until(_all_done(page, 1, 2))
    with grpc.insecure_channel(stack.gateway_grpc) as channel:
        conversation = chat_pb2_grpc.ChatServiceStub(channel).GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=conversation_id),
            metadata=(("authorization", f"Bearer {token('alice', 'user')}"),),
        )
    follow_up = next(m for m in conversation.messages if m.role == "user" and m.content == "And of Italy?")
    assert follow_up.parent_id == original_id  # the next turn continued from the answer the arrows chose
    VISIT["conversation_id"] = conversation_id
    VISIT["original_id"] = original_id
    VISIT["regenerated_id"] = regenerated_id


def test_a_conversation_reopens_from_the_list_with_its_sibling_answers(page: WebDriver, stack: Stack) -> None:
    go(page, stack, "/chat")
    css(page, "details.conversations summary").click()
    css(page, f'a[data-conversation-id="{VISIT["conversation_id"]}"]').click()
    wait(page).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.turn")) == 2)
    assert [t.text for t in page.find_elements(By.CLASS_NAME, "user-message")] == [
        "What is the capital of France?",
        "And of Italy?",
    ]
    first = _answers(page, 0)
    assert [a.get_attribute("data-model-id") for a in first] == [MODEL_ID, SMOLLM2]
    second = first[1]
    assert second.get_attribute("data-message-id") == VISIT["original_id"]  # the branch the conversation is on
    assert second.find_element(By.CLASS_NAME, "sibling-count").text == "1/2"
    second.find_element(By.CLASS_NAME, "sibling-next").click()
    wait(page).until(lambda d: second.get_attribute("data-message-id") == VISIT["regenerated_id"])
    assert all(a.find_element(By.CLASS_NAME, "answer-text").text.strip() for a in _answers(page, 1))


def test_the_workspace_and_chat_fit_a_phone_screen(page: WebDriver, stack: Stack, artefacts: Path) -> None:
    page.set_window_size(390, 844)
    try:
        for path in ("/models", "/chat", f"/models/edit?id={MODEL_ID}"):
            go(page, stack, path)
            css(page, "h1")
            overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at phone width"
        go(page, stack, "/models")
        card(page, MODEL_ID)
        shot(page, artefacts, "workspace-phone.png")
    finally:
        page.set_window_size(1280, 900)
