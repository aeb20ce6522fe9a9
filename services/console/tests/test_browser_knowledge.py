"""Knowledge in a real browser: create a collection, upload a text file and watch its status reach "indexed"
without reloading (htmx polls the files fragment), query it and see the file cited; the page fits a phone.
Then a model using the collection answers in the chat with the file under "Sources".

The tests of this module run in order and share one browser session, as a user's visit would."""

from __future__ import annotations

from pathlib import Path

from console_kit import SMOLLM2, Stack, browser_sign_in, unique
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_SECONDS = 120
# What the first test leaves for the next.
VISIT: dict[str, str] = {}


def test_upload_is_indexed_while_the_page_is_open_and_a_query_cites_the_file(
    stack: Stack, browser: WebDriver, artefacts: Path, tmp_path: Path
) -> None:
    note = tmp_path / "orchard.md"
    note.write_text("# Orchard\n\nThe quince trees by the north wall are pruned in February.\n")
    wait = WebDriverWait(browser, WAIT_SECONDS)
    browser_sign_in(browser, stack, wait)
    browser.find_element(By.LINK_TEXT, "Knowledge").click()
    name = unique("Orchard")
    wait.until(ec.presence_of_element_located((By.ID, "collection-name"))).send_keys(name)
    browser.find_element(By.CSS_SELECTOR, "#create-collection button[type=submit]").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "collection-title"), name))
    VISIT["knowledge_id"] = browser.find_element(By.CSS_SELECTOR, "#upload-form input[name=id]").get_attribute("value")

    browser.find_element(By.ID, "knowledge-file").send_keys(str(note))
    browser.find_element(By.ID, "upload").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#files .file-name"), "orchard.md"))
    # The status changes in place: the page is not reloaded, htmx swaps the polled fragment.
    browser.execute_script("document.body.dataset.sameDocument = 'yes'")
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#files .file-status"), "indexed"))
    assert browser.find_element(By.ID, "files").get_attribute("data-settled") == "true"
    assert browser.execute_script("return document.body.dataset.sameDocument") == "yes"

    browser.find_element(By.ID, "knowledge-query").send_keys("when are the quince trees pruned?")
    browser.find_element(By.ID, "query-submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#query-results .citation")))
    first = browser.find_element(By.CSS_SELECTOR, "#query-results .citation")
    assert first.find_element(By.CLASS_NAME, "citation-file").text == "orchard.md"
    assert "February" in first.find_element(By.CLASS_NAME, "citation-snippet").text
    assert browser.execute_script("return document.body.dataset.sameDocument") == "yes"  # htmx swapped the results
    browser.execute_script("document.getElementById('files').scrollIntoView()")
    browser.save_screenshot(str(artefacts / "knowledge.png"))

    browser.set_window_size(390, 844)
    try:
        for path in (browser.current_url, stack.console_url + "/knowledge"):
            browser.get(path)
            wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at phone width"
    finally:
        browser.set_window_size(1280, 900)


def test_a_chat_answer_shows_its_sources(stack: Stack, browser: WebDriver, artefacts: Path) -> None:
    model = stack.create_model(
        "alice",
        id=unique("orchard-bot"),
        name="Orchard bot",
        base_model_id=SMOLLM2,
        meta={"knowledge": [{"id": VISIT["knowledge_id"], "name": "Orchard"}]},
    )
    wait = WebDriverWait(browser, WAIT_SECONDS)

    def in_the_picker(driver: WebDriver) -> bool:
        # The gateway learns of a new model file from the registry's events, so the first load may miss it.
        driver.get(stack.console_url + "/chat")
        return bool(driver.find_elements(By.CSS_SELECTOR, f'#model-1 option[value="{model["id"]}"]'))

    wait.until(in_the_picker)
    Select(browser.find_element(By.ID, "model-1")).select_by_value(model["id"])
    browser.find_element(By.ID, "message").send_keys("When are the quince trees pruned?")
    browser.find_element(By.ID, "send").click()
    answer = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".answer[data-status=done]")))
    sources = answer.find_element(By.CLASS_NAME, "answer-citations")
    assert sources.is_displayed()
    sources.find_element(By.TAG_NAME, "summary").click()
    files = {f.text for f in sources.find_elements(By.CLASS_NAME, "citation-file")}
    assert files == {"orchard.md"}
    assert "February" in sources.find_element(By.CLASS_NAME, "citation-snippet").text
    browser.save_screenshot(str(artefacts / "chat-citations.png"))
