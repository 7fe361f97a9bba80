"""The dashboard in a real browser: Debian's Chromium, driven by Selenium through chromedriver.

The app runs in uvicorn on a free port (the fake driver, the real host agent), so the dashboard
reaches the API over real HTTP, as in production.  The test signs in, watches a server created
through the API appear and reach ACTIVE without reloading the page (htmx polls the table), stops
it with its button, launches another from the launch dialog and watches it reach ACTIVE, opens
its page (the console log follows), creates a network with a subnet and a router on the networks
page and a volume on the volumes page (a snapshot of it, then deletes both from their rows),
uploads an image file on the images page (the progress bar reaches the file's size and the image
becomes active), allocates a floating IP, checks that the strict Content-Security-Policy blocked
nothing, and signs out.  A second test opens a server's serial console, types a line into the
terminal and sees the guest (the fake driver's shell) answer, logs the shell out and reconnects.
They leave a screenshot of each page in build/screenshots (docs/img with YUN_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.functional.cli.test_yun_cli import served, services
from tests.functional.compute import test_servers
from tests.functional.compute.test_servers import body, wait_for

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the test says so below (skip locally, fail in CI)
    webdriver = None

__all__ = ["host", "qcow2", "served", "services", "world"]  # fixtures, used by name
world, host, qcow2 = test_servers.world, test_servers.host, test_servers.qcow2

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The docs' screenshots are taken by this test: with YUN_UPDATE_SCREENSHOTS=1 it writes them into
# docs/img; otherwise into build/screenshots, so that a test run leaves the checkout clean.
_ROOT = Path(__file__).resolve().parents[2]
SHOTS = _ROOT / "docs" / "img" if os.environ.get("YUN_UPDATE_SCREENSHOTS") == "1" else _ROOT / "build" / "screenshots"
SCREENSHOT = SHOTS / "dashboard-instances.png"
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
        browser: Any, served: Path, world: dict[str, Any], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{world['api'].services.config.server.port}"
    # htmx swaps polled parts in place: an element found a moment ago may be gone; look again.
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

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

    # The launch dialog: a <details> whose form htmx loads when it opens; the launch is a boosted form.
    browser.find_element(By.CSS_SELECTOR, "#launch summary").click()
    wait.until(lambda d: d.find_elements(By.ID, "launch-submit"))
    browser.find_element(By.CSS_SELECTOR, "form.launch input[name=name]").send_keys("web-2")
    browser.find_element(By.ID, "launch-submit").click()
    wait.until(lambda d: "Launching web-2." in d.page_source)
    launched = [r for r in world["alice"].get("/servers").json()["servers"] if r["name"] == "web-2"]
    assert len(launched) == 1
    row2 = f"#server-{launched[0]['id']}"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row2)
               and "ACTIVE" in d.find_element(By.CSS_SELECTOR, f"{row2} .status").text)
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"

    browser.find_element(By.CSS_SELECTOR, f"{row2} .name a").click()  # the server's page
    wait.until(lambda d: "YUNSTACK-READY" in d.find_element(By.ID, "console").text)
    browser.find_element(By.CSS_SELECTOR, "#server-actions form[action$='/pause'] button").click()
    wait.until(lambda d: "PAUSED" in d.find_element(By.CSS_SELECTOR, "#server-status .status").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#server-actions form[action$='/unpause']"))
    browser.save_screenshot(str(SHOTS / "dashboard-server.png"))

    browser.find_element(By.LINK_TEXT, "Networks").click()
    wait.until(lambda d: d.find_elements(By.ID, "create-network"))
    form = browser.find_element(By.ID, "create-network")
    form.find_element(By.NAME, "name").send_keys("inside")
    form.find_element(By.NAME, "cidr").send_keys("10.9.0.0/24")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: "Created the network inside with the subnet 10.9.0.0/24." in d.page_source)
    browser.find_element(By.CSS_SELECTOR, "#create-router input[name=name]").send_keys("r1")
    browser.find_element(By.CSS_SELECTOR, "#create-router button").click()
    wait.until(lambda d: "Created the router r1." in d.page_source)
    browser.find_element(By.CSS_SELECTOR, "form[action$='/add'] button").click()
    wait.until(lambda d: "Added the subnet to the router." in d.page_source)
    assert "10.9.0.0/24" in browser.find_element(By.CSS_SELECTOR, "tr[id^=router-]").text
    browser.save_screenshot(str(SHOTS / "dashboard-networks.png"))
    browser.find_element(By.LINK_TEXT, "Network topology").click()  # the same networks as a picture
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "figure.topology svg"))
    assert "inside" in browser.find_element(By.CSS_SELECTOR, "figure.topology svg").get_attribute("innerHTML")
    browser.save_screenshot(str(SHOTS / "dashboard-topology.png"))
    browser.find_element(By.LINK_TEXT, "Overview").click()  # the project's quotas as rings
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rings svg"))
    browser.save_screenshot(str(SHOTS / "dashboard-overview.png"))

    browser.find_element(By.LINK_TEXT, "Volumes").click()
    wait.until(lambda d: d.find_elements(By.ID, "create-volume"))
    browser.find_element(By.CSS_SELECTOR, "#create-volume input[name=name]").send_keys("data")
    browser.find_element(By.CSS_SELECTOR, "#create-volume button").click()
    wait.until(lambda d: "Creating the volume data." in d.page_source)
    wait.until(lambda d: "available" in d.find_element(By.CSS_SELECTOR, "tr[id^=volume-]").text)
    # A row's action inside the polled tables answers with the whole page, not the tables alone
    # (the row forms must not inherit the poll's hx-select: hx-disinherit).
    browser.find_element(By.CSS_SELECTOR, "tr[id^=volume-] form[action$='/snapshot'] button").click()
    wait.until(lambda d: "Creating the snapshot data-snap." in d.page_source)
    assert browser.find_element(By.CSS_SELECTOR, "h1").text and browser.find_elements(By.ID, "create-volume")
    wait.until(lambda d: "available" in d.find_element(By.CSS_SELECTOR, "tr[id^=snapshot-]").text)
    browser.save_screenshot(str(SHOTS / "dashboard-volumes.png"))
    browser.find_element(By.CSS_SELECTOR, "tr[id^=snapshot-] form[action$='/delete'] button").click()
    wait.until(expected_conditions.alert_is_present()).accept()  # htmx's hx-confirm
    wait.until(lambda d: "Deleting the snapshot." in d.page_source)
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[id^=snapshot-]"))
    # A row's Delete (a boosted form inside the polled table) asks, then swaps in the whole page: the
    # nav bar stays, which the next step uses.
    browser.find_element(By.CSS_SELECTOR, "tr[id^=volume-] form[action$='/delete'] button").click()
    wait.until(expected_conditions.alert_is_present()).accept()  # htmx's hx-confirm
    wait.until(lambda d: "Deleting the volume." in d.page_source)
    wait.until(lambda d: "No volumes in this project yet." in d.page_source)

    # An upload from the browser: static/images.js registers the image, then sends the file with
    # XMLHttpRequest (its progress in the <progress> bar), which the dashboard streams on to Glance.
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(range(256)) * (8 << 12))  # 8 MiB: not a known format, so raw
    browser.find_element(By.LINK_TEXT, "Images").click()
    wait.until(lambda d: d.find_elements(By.ID, "upload-image"))
    form = browser.find_element(By.ID, "upload-image")
    form.find_element(By.NAME, "name").send_keys("uploaded")
    form.find_element(By.CSS_SELECTOR, "select[name=disk_format] option[value=raw]").click()
    form.find_element(By.NAME, "file").send_keys(str(disk))
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: "the image uploaded is active" in d.find_element(By.ID, "upload-status").text)
    bar = browser.find_element(By.ID, "upload-progress")
    assert bar.get_property("value") == bar.get_property("max") == disk.stat().st_size
    wait.until(lambda d: any("uploaded" in r.text and "active" in r.text and "8.0 MiB" in r.text
                             for r in d.find_elements(By.CSS_SELECTOR, "tr[id^=image-]")))
    [image] = [i for i in world["api"].http.get("/image/v2/images", headers={"X-Auth-Token": world["alice"].token})
               .json()["images"] if i["name"] == "uploaded"]
    assert image["status"] == "active" and image["size"] == disk.stat().st_size
    assert image["checksum"] == hashlib.md5(disk.read_bytes()).hexdigest()
    browser.save_screenshot(str(SHOTS / "dashboard-images.png"))

    admin = {"X-Auth-Token": world["admin"].token}
    public = world["api"].http.post("/networking/v2.0/networks", headers=admin,
                                    json={"network": {"name": "public", "router:external": True}}).json()["network"]
    r = world["api"].http.post("/networking/v2.0/subnets", headers=admin, json={"subnet": {
        "network_id": public["id"], "cidr": "172.30.0.0/24", "ip_version": 4, "enable_dhcp": False}})
    assert r.status_code == 201, r.text
    browser.find_element(By.LINK_TEXT, "Floating IPs").click()
    wait.until(lambda d: d.find_elements(By.ID, "allocate-floating-ip"))
    browser.find_element(By.CSS_SELECTOR, "#allocate-floating-ip button").click()
    wait.until(lambda d: "Allocated the floating IP 172.30.0." in d.page_source)
    assert "public" in browser.find_element(By.CSS_SELECTOR, "tr[id^=floating-ip-]").text
    browser.save_screenshot(str(SHOTS / "dashboard-floating-ips.png"))

    for page, shot in (("Key pairs", "keypairs"), ("Security groups", "security-groups")):
        browser.find_element(By.LINK_TEXT, page).click()
        wait.until(lambda d, page=page: d.find_element(By.CSS_SELECTOR, "h1").text.startswith(page))
        browser.save_screenshot(str(SHOTS / f"dashboard-{shot}.png"))
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"

    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []

    browser.find_element(By.ID, "sign-out").click()
    wait.until(lambda d: "/dashboard/login" in d.current_url)
    assert "You have signed out." in browser.page_source
    browser.get(url + "/dashboard/project/instances")
    wait.until(lambda d: "/dashboard/login" in d.current_url)


def test_a_browser_types_into_a_servers_serial_console_and_sees_the_guest_answer(
        browser: Any, served: Path, world: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{world['api'].services.config.server.port}"
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    r = world["alice"].post("/servers", body(world, name="web-1"))
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    wait_for(world["alice"], server_id, "ACTIVE")

    browser.get(url + "/dashboard/login")
    browser.find_element(By.NAME, "user").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("alice-pw")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard/project/instances"))
    browser.get(f"{url}/dashboard/project/instances/{server_id}")
    browser.find_element(By.ID, "open-serial").click()
    wait.until(lambda d: d.current_url.endswith(f"/{server_id}/serial"))
    # serial.js asked for a one-time URL and opened it on this page's origin (ws:, connect-src 'self').
    wait.until(lambda d: d.find_element(By.ID, "serial-status").text.startswith("Connected"))

    def screen(d: Any) -> str:
        return str(d.execute_script("return document.querySelector('#serial .xterm-rows').textContent")
                   ).replace("\xa0", " ")

    def type_into_the_terminal(*keys: str) -> None:
        # A click focuses the terminal (its hidden textarea takes the keys); Enter is a carriage
        # return, as on a serial line.
        browser.find_element(By.CSS_SELECTOR, "#serial .xterm-screen").click()
        ActionChains(browser).send_keys(*keys).perform()

    type_into_the_terminal("hello", Keys.ENTER)
    wait.until(lambda d: "fake-serial: hello" in screen(d))
    # xterm's own CSS (font, colours, row heights) went into a constructed stylesheet, not a blocked <style>.
    rows = browser.find_element(By.CSS_SELECTOR, "#serial .xterm-rows")
    assert "ui-monospace" in rows.value_of_css_property("font-family")
    assert rows.value_of_css_property("white-space") == "pre"
    assert not browser.find_elements(By.CSS_SELECTOR, "style")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "dashboard-serial-console.png"))

    # Ctrl-D logs the fake shell out: the websocket closes, the page says so and offers to reconnect
    # (a new one-time URL, a new shell).
    browser.find_element(By.CSS_SELECTOR, "#serial .xterm-screen").click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("d").key_up(Keys.CONTROL).perform()
    wait.until(lambda d: d.find_element(By.ID, "serial-status").text == "Disconnected from the serial console.")
    browser.find_element(By.ID, "serial-reconnect").click()
    wait.until(lambda d: d.find_element(By.ID, "serial-status").text.startswith("Connected"))
    assert not browser.find_element(By.ID, "serial-reconnect").is_displayed()
    type_into_the_terminal("again", Keys.ENTER)
    wait.until(lambda d: "fake-serial: again" in screen(d))

    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []
