"""The dashboard in a real browser: Debian's Chromium, driven by Selenium through chromedriver.

The app runs in uvicorn on a free port (the fake driver, the real host agent), so the dashboard
reaches the API over real HTTP, as in production.  The test signs in, watches a server created
through the API appear and reach ACTIVE without reloading the page (htmx polls the table), stops
it with its button, checks that the strict Content-Security-Policy blocked nothing, and signs
out.  It leaves a screenshot in build/screenshots (docs/img with YUN_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.functional.cli.test_yun_cli import served, services
from tests.functional.compute import test_servers
from tests.functional.compute.test_servers import body

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the test says so below (skip locally, fail in CI)
    webdriver = None

__all__ = ["host", "qcow2", "served", "services", "world"]  # fixtures, used by name
world, host, qcow2 = test_servers.world, test_servers.host, test_servers.qcow2

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The docs' screenshots are taken by this test: with YUN_UPDATE_SCREENSHOTS=1 it writes them into
# docs/img; otherwise into build/screenshots, so that a test run leaves the checkout clean.
_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = (_ROOT / "docs" / "img" if os.environ.get("YUN_UPDATE_SCREENSHOTS") == "1"
              else _ROOT / "build" / "screenshots") / "dashboard-instances.png"
WAIT = 30.0


@pytest.fixture
def browser() -> Iterator[Any]:
    need(webdriver is not None, "selenium (pip install -e .[test])")
    need(shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
         "chromium and chromium-driver (scripts/install-system)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,720", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given: Selenium Manager downloads nothing.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_browser_signs_in_watches_a_new_server_become_active_and_signs_out(
        browser: Any, served: Path, world: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{world['api'].services.config.server.port}"
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1)

    browser.get(url + "/")  # a browser at the root is sent to the dashboard, then to sign in
    wait.until(lambda d: "/dashboard/login" in d.current_url)
    browser.find_element(By.NAME, "user").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("alice-pw")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard/project/instances"))
    assert "No servers in this project yet." in browser.page_source
    assert "alpha" in browser.find_element(By.CSS_SELECTOR, "h1").text
    browser.execute_script("window.stillTheSamePage = true")

    r = world["alice"].post("/servers", body(world, name="web-1"))
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    row = f"#server-{server_id}"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    wait.until(lambda d: "ACTIVE" in d.find_element(By.CSS_SELECTOR, f"{row} .status").text)
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"
    assert browser.find_element(By.CSS_SELECTOR, f"{row} .name").text == "web-1"
    assert browser.find_elements(By.CSS_SELECTOR, f"{row} form[action$='/stop'] button")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # The Stop button is a form htmx boosts (no reload, the CSRF token in its header).
    browser.find_element(By.CSS_SELECTOR, f"{row} form[action$='/stop'] button").click()
    wait.until(lambda d: "Stopping the server." in d.page_source)
    wait.until(lambda d: "SHUTOFF" in d.find_element(By.CSS_SELECTOR, f"{row} .status").text)
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"

    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []

    browser.find_element(By.ID, "sign-out").click()
    wait.until(lambda d: "/dashboard/login" in d.current_url)
    assert "You have signed out." in browser.page_source
    browser.get(url + "/dashboard/project/instances")
    wait.until(lambda d: "/dashboard/login" in d.current_url)
