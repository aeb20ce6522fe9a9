""" "Pull X" in a real browser: a model pushed to the session's OCI registry (Ollama-style layers) is pulled by the
real puller, its progress bar reaches 100 % from the puller's server-sent events, and the base model appears."""

from __future__ import annotations

from pathlib import Path

from console_kit import Stack, browser_sign_in
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 180


def test_pull_shows_progress_to_100_percent_and_the_base_model_appears(
    stack: Stack, browser: WebDriver, pushed_model: str, artefacts: Path
) -> None:
    wait = WebDriverWait(browser, WAIT_SECONDS)
    browser_sign_in(browser, stack, wait)
    browser.get(stack.console_url + "/base-models")
    wait.until(ec.presence_of_element_located((By.ID, "pull-name"))).send_keys(pushed_model)
    browser.find_element(By.ID, "pull-start").click()
    box = wait.until(ec.visibility_of_element_located((By.ID, "pull-progress")))
    wait.until(lambda d: box.get_attribute("data-state") in ("completed", "failed", "cancelled"))
    assert box.get_attribute("data-state") == "completed", browser.find_element(By.ID, "pull-label").text
    assert browser.find_element(By.ID, "pull-bar").get_attribute("value") == "100"
    assert browser.find_element(By.ID, "pull-percent").text == "100 %"
    layers = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#pull-layers li")]
    assert layers and all(text.endswith("100 %") for text in layers)
    base_model_id = pushed_model.rsplit("/", 1)[-1]
    wait.until(
        lambda d: any(
            base_model_id in td.text or pushed_model in td.text
            for td in d.find_elements(By.CSS_SELECTOR, "table tbody td:first-child")
        )
    )
    browser.save_screenshot(str(artefacts / "pull.png"))
