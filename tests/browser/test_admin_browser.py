"""The admin pages in a real browser (Chromium through Selenium, as test_dashboard_browser.py).

The admin signs in, finds the Admin entry in the nav bar, disables the compute host with a
reason and enables it again (boosted forms: no reload), opens the memory page and sees the
charts of a host and a server drawn from the ledger (samples seeded an hour ahead, so the
agent's own reports come before them), and the strict Content-Security-Policy blocked nothing:
the charts are SVG drawn by the server, not by script.  Screenshots: dashboard-admin-hosts.png
and dashboard-admin-memory.png (in docs/img with YUN_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.browser.test_dashboard_browser import SHOTS, WAIT, browser
from tests.functional.cli.test_yun_cli import served, services
from tests.functional.compute import test_servers
from tests.functional.compute.test_servers import body, wait_for
from yunstack.db.tables import compute as t
from yunstack.types import utcnow

try:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the browser fixture skips (or fails in CI) without selenium
    pass

__all__ = ["browser", "host", "qcow2", "served", "services", "world"]  # fixtures, used by name
world, host, qcow2 = test_servers.world, test_servers.host, test_servers.qcow2
MIB = 1 << 20


def seed(world: dict[str, Any], host_name: str, server_id: str, count: int = 60) -> None:
    """``count`` ledger samples 10 s apart, an hour ahead: a guest growing, KSM sharing, a balloon."""
    start = utcnow() + timedelta(hours=1)
    with world["api"].services.db.begin() as s:
        for i in range(count):
            resident = int((180 + 60 * math.sin(i / 8) + i) * MIB)
            shared = int(min(i, 30) * 2 * MIB)
            ballooned = int(max(0, i - 35) * 3 * MIB)
            entry = {"level": "ksm" if i > 10 else "none", "reasons": ["seeded by the browser test"],
                     "host": {"physical": 1024 * MIB, "committed": 512 * MIB, "guests_resident": resident + 40 * MIB,
                              "guests_used": resident + 40 * MIB - shared, "consolidation_ratio": 1.5,
                              "savings_ksm": shared, "savings_balloon": ballooned, "savings_swap": 0,
                              "available": 1024 * MIB - resident},
                     "guests": [{"instance_id": server_id, "configured": 512 * MIB, "resident": resident,
                                 "shared": shared, "ballooned": ballooned, "swapped": 0,
                                 "working_set": resident // 2, "pressured": False}]}
            s.add(t.MemorySample(host=host_name, at=start + timedelta(seconds=10 * i), data=entry))


def test_an_admin_manages_a_host_and_watches_the_memory_charts(browser: Any, served: Path,
                                                                world: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{world['api'].services.config.server.port}"
    host_name = world["host"].driver.hostname
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    sid = world["alice"].post("/servers", body(world, name="db-1")).json()["server"]["id"]
    wait_for(world["alice"], sid, "ACTIVE")
    seed(world, host_name, sid)

    browser.get(url + "/dashboard/login")
    browser.find_element(By.NAME, "user").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("adminpw")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard/project/instances"))
    browser.find_element(By.LINK_TEXT, "Admin").click()
    wait.until(lambda d: d.find_elements(By.ID, f"host-{host_name}"))
    browser.execute_script("window.stillTheSamePage = true")
    row = f"tr[id='host-{host_name}']"
    browser.find_element(By.CSS_SELECTOR, f"{row} input[name=reason]").send_keys("firmware update")
    browser.find_element(By.CSS_SELECTOR, f"{row} form[action$='/disable'] button").click()
    wait.until(lambda d: "firmware update" in d.find_element(By.CSS_SELECTOR, row).text)
    # the answer replaced the whole page (the form does not inherit the polled table's hx-select)
    assert browser.find_element(By.CSS_SELECTOR, "h1").text.startswith("Compute hosts")
    assert f"Disabled {host_name} (firmware update)" in browser.find_element(By.CSS_SELECTOR, "p.note").text
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "dashboard-admin-hosts.png"))
    browser.find_element(By.CSS_SELECTOR, f"{row} form[action$='/enable'] button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} form[action$='/disable']"))
    assert world["admin"].get("/os-services").json()["services"][0]["status"] == "enabled"

    wait.until(lambda d: d.find_element(By.LINK_TEXT, "Memory")).click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart path.line")) >= 10)
    titles = [e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "svg.chart title")]
    assert titles == [f"host {host_name}", "server db-1"], titles
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"
    browser.save_screenshot(str(SHOTS / "dashboard-admin-memory.png"))

    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []
