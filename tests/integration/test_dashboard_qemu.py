"""The dashboard in a real browser against a real `yun up` with real QEMU guests.

Debian's Chromium (headless, through Selenium and chromedriver, set up as in
tests/browser/test_dashboard_browser.py) signs in as the demo user at `/`, launches a server from
the tiny image in the launch dialog and watches its row reach ACTIVE without a reload, creates a
network with a subnet and a router with that subnet, and a volume, reads the guest's boot on its
page until `YUNSTACK-READY`, attaches the volume there, opens the serial console and types a
command whose answer shows the guest's arithmetic and the volume's serial among its disks, stops,
starts and deletes the server with its buttons, deletes the volume, router and network with
theirs, finds no Content-Security-Policy violation, signs out and sees the old session cookie open
nothing.  Only the checks go to the API.  Screenshots: `dashboard-qemu-*.png` beside the other
browser test's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_dashboard_browser import SHOTS, browser
from tests.cloud import RunningCloud, serving_cloud
from tests.integration.test_openstack_cli_compute import qemu_pids
from yunstack.client import ApiError, YunClient, load_cloud
from yunstack.client.networks import delete_network, delete_router, list_networks, list_routers, remove_interface
from yunstack.client.servers import list_servers, server_action
from yunstack.client.volumes import delete_volume, list_volumes

try:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the browser fixture says so (skip locally, fail in CI)
    pass

pytestmark = pytest.mark.integration
__all__ = ["browser"]  # a fixture, used by name

DEMO = "yunstack-demo"
WAIT = 30.0  # a page, a form, a volume
BOOT = 180.0  # a tiny guest under TCG on a loaded host: QEMU's start, then its boot to the shell


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture
def demo(cloud: RunningCloud) -> Iterator[YunClient]:
    """The demo user's API client, for the checks; afterwards it removes whatever the browser left."""
    with YunClient.from_clouds_yaml(cloud.clouds_yaml, DEMO) as client:
        try:
            yield client
        finally:
            _clean(client)


def _clean(client: YunClient) -> None:
    """Servers, then routers, networks and volumes: a router or network left behind would keep its
    namespace and links on the host after the cloud stopped."""
    for s in list_servers(client):
        try:
            server_action(client, s.id, "delete")
        except ApiError:
            pass  # already deleting
    deadline = time.monotonic() + 60
    while list_servers(client) or any(v.status not in ("available", "error") for v in list_volumes(client)):
        assert time.monotonic() < deadline, "the servers did not go"
        time.sleep(0.5)
    for r in list_routers(client):
        for subnet_id in r.subnet_ids:
            remove_interface(client, r.id, subnet_id)
        delete_router(client, r.id)
    for n in list_networks(client):
        if not n.external and not n.shared:
            delete_network(client, n.id)
    for v in list_volumes(client):
        try:
            delete_volume(client, v.id)
        except ApiError:
            pass  # already deleting


def test_a_browser_runs_a_real_guest_through_its_life(browser: Any, cloud: RunningCloud, demo: YunClient) -> None:
    # htmx swaps polled parts in place: an element found a moment ago may be gone; look again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.2, ignored_exceptions=ignored)
    boot = WebDriverWait(browser, BOOT, poll_frequency=0.5, ignored_exceptions=ignored)
    SHOTS.mkdir(parents=True, exist_ok=True)
    password = load_cloud(cloud.clouds_yaml, DEMO).password

    def text(css: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)

    def press(css: str) -> None:
        """Click once it is there: a polled part may be swapped between finding and clicking."""
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)

    def confirm() -> None:
        """htmx's hx-confirm asks with the browser's own dialog."""
        wait.until(expected_conditions.alert_is_present()).accept()

    def same_page() -> bool:
        return browser.execute_script("return window.stillTheSamePage === true") is True

    # -- sign in ------------------------------------------------------------------------------------
    browser.get(cloud.url + "/")  # a browser at the root is sent to the dashboard, then to sign in
    wait.until(lambda d: "/dashboard/login" in d.current_url)
    domain = browser.find_element(By.NAME, "domain")
    domain.clear()
    domain.send_keys("Default")
    browser.find_element(By.NAME, "user").send_keys("demo")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard/project/instances"))
    assert "demo" in text("h1")
    browser.execute_script("window.stillTheSamePage = true")

    # -- launch from the dialog: the tiny image, the smallest flavor, no network -------------------
    press("#launch summary")
    wait.until(lambda d: d.find_elements(By.ID, "launch-submit"))
    form = browser.find_element(By.CSS_SELECTOR, "form.launch")
    form.find_element(By.NAME, "name").send_keys("dash-1")
    Select(form.find_element(By.NAME, "image_id")).select_by_visible_text("tiny")
    flavor = Select(form.find_element(By.NAME, "flavor_id"))
    assert flavor.options[0].text.startswith("m1.nano"), "flavors are listed smallest first"
    flavor.select_by_index(0)
    browser.find_element(By.ID, "launch-submit").click()
    wait.until(lambda d: "Launching dash-1." in d.page_source)
    wait.until(lambda d: d.find_elements(By.XPATH, "//tr[td[@class='name']/a[text()='dash-1']]"))
    server_id = browser.find_element(By.XPATH, "//tr[td[@class='name']/a[text()='dash-1']]").get_attribute("id")
    server_id = server_id.removeprefix("server-")
    row = f"#server-{server_id}"
    boot.until(lambda d: "ACTIVE" in text(f"{row} .status"))
    assert same_page(), "the page was reloaded"
    assert [(s.id, s.status) for s in list_servers(demo)] == [(server_id, "ACTIVE")]
    browser.save_screenshot(str(SHOTS / "dashboard-qemu-instances.png"))

    # -- a network with a subnet, and a router with that subnet (while the guest boots) -------------
    browser.find_element(By.LINK_TEXT, "Networks").click()
    wait.until(lambda d: d.find_elements(By.ID, "create-network"))
    form = browser.find_element(By.ID, "create-network")
    form.find_element(By.NAME, "name").send_keys("dash-net")
    form.find_element(By.NAME, "cidr").send_keys("10.77.0.0/24")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: "Created the network dash-net with the subnet 10.77.0.0/24." in d.page_source)
    browser.find_element(By.CSS_SELECTOR, "#create-router input[name=name]").send_keys("dash-router")
    press("#create-router button")
    wait.until(lambda d: "Created the router dash-router." in d.page_source)
    press("form[action$='/add'] button")
    wait.until(lambda d: "Added the subnet to the router." in d.page_source)
    assert "10.77.0.0/24" in text("tr[id^=router-]")
    (net,) = [n for n in list_networks(demo) if n.name == "dash-net"]
    (router,) = list_routers(demo)
    assert [s.cidr for s in net.subnets] == ["10.77.0.0/24"] and router.subnet_ids == (net.subnets[0].id,)
    browser.save_screenshot(str(SHOTS / "dashboard-qemu-networks.png"))

    # -- a volume ----------------------------------------------------------------------------------
    browser.find_element(By.LINK_TEXT, "Volumes").click()
    wait.until(lambda d: d.find_elements(By.ID, "create-volume"))
    browser.find_element(By.CSS_SELECTOR, "#create-volume input[name=name]").send_keys("dash-vol")
    press("#create-volume button")
    wait.until(lambda d: "Creating the volume dash-vol." in d.page_source)
    wait.until(lambda d: "available" in text("tr[id^=volume-]"))
    (volume,) = list_volumes(demo)
    assert (volume.name, volume.size) == ("dash-vol", 1)

    # -- the server's page: its console log, from the real guest's serial port ----------------------
    browser.find_element(By.LINK_TEXT, "Instances").click()
    press(f"{row} .name a")
    wait.until(lambda d: d.find_elements(By.ID, "console"))
    boot.until(lambda d: "YUNSTACK-READY" in text("#console"))
    assert f"instance-id={server_id}" in text("#console")
    assert same_page(), "the page was reloaded"

    # -- attach the volume: the volumes page follows it to in-use, the server's page lists it -------
    Select(browser.find_element(By.NAME, "volume_id")).select_by_visible_text("dash-vol (1 GiB)")
    press(f"form[action$='/{server_id}/attach'] button")  # the volume's (an interface's ends /interfaces/attach)
    wait.until(lambda d: "Attaching the volume." in d.page_source)
    browser.find_element(By.LINK_TEXT, "Volumes").click()
    wait.until(lambda d: "in-use" in text(f"#volume-{volume.id}"))
    assert "dash-1" in text(f"#volume-{volume.id}")
    assert [v.attached_to for v in list_volumes(demo)] == [(server_id,)]
    press(f"#volume-{volume.id} a")  # its "attached to": the server's page
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"form[action$='/{server_id}/detach']"))
    assert "dash-vol (1 GiB)" in browser.page_source
    browser.save_screenshot(str(SHOTS / "dashboard-qemu-server.png"))

    # -- the serial console: the guest's shell answers, and sees the volume among its disks ---------
    browser.find_element(By.ID, "open-serial").click()
    wait.until(lambda d: d.current_url.endswith(f"/{server_id}/serial"))
    wait.until(lambda d: text("#serial-status").startswith("Connected"))

    def screen() -> str:
        return str(browser.execute_script("return document.querySelector('#serial .xterm-rows').textContent")
                   ).replace("\xa0", " ")

    # virtio-blk shows the first 20 characters of the volume's id as the disk's serial.  The typed
    # line holds neither answer: only the shell's output can.
    answers = ("yun-42", volume.id[:20])

    def answered() -> bool:
        seen = screen()
        return all(a in seen for a in answers)

    deadline = time.monotonic() + 60
    typed_at = 0.0
    while not answered():
        assert time.monotonic() < deadline, f"the guest did not answer: {screen()[-800:]!r}"
        if time.monotonic() - typed_at > 10:  # typed again while unanswered: a hot-plugged disk takes a moment
            browser.find_element(By.CSS_SELECTOR, "#serial .xterm-screen").click()
            ActionChains(browser).send_keys("echo yun-$((6*7)); cat /sys/block/vd*/serial; echo",
                                            Keys.ENTER).perform()
            typed_at = time.monotonic()
        time.sleep(0.2)
    browser.save_screenshot(str(SHOTS / "dashboard-qemu-serial.png"))
    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []

    # -- stop, start and delete with the server page's buttons --------------------------------------
    browser.find_element(By.LINK_TEXT, "dash-1").click()  # the serial page's links are full loads
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#server-actions form[action$='/stop']"))
    browser.execute_script("window.stillTheSamePage = true")
    press("#server-actions form[action$='/stop'] button")
    wait.until(lambda d: "Stopping the server." in d.page_source)
    boot.until(lambda d: "SHUTOFF" in text("#server-status .status"))
    assert qemu_pids(server_id) == []
    press("#server-actions form[action$='/start'] button")
    wait.until(lambda d: "Starting the server." in d.page_source)
    boot.until(lambda d: "ACTIVE" in text("#server-status .status"))
    assert len(qemu_pids(server_id)) == 1
    press("#server-actions form[action$='/delete'] button")
    confirm()
    wait.until(lambda d: "Deleting the server." in d.page_source)
    wait.until(lambda d: d.current_url.endswith("/dashboard/project/instances"))
    boot.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    wait.until(lambda d: "No servers in this project yet." in d.page_source)
    assert same_page(), "the page was reloaded"
    assert list_servers(demo) == [] and qemu_pids(server_id) == []

    # -- the volume, the router and the network go with their buttons -------------------------------
    browser.find_element(By.LINK_TEXT, "Volumes").click()
    wait.until(lambda d: "available" in text(f"#volume-{volume.id}"))
    press(f"#volume-{volume.id} form[action$='/delete'] button")
    confirm()
    wait.until(lambda d: "Deleting the volume." in d.page_source)
    wait.until(lambda d: "No volumes in this project yet." in d.page_source)
    browser.find_element(By.LINK_TEXT, "Networks").click()
    wait.until(lambda d: d.find_elements(By.ID, f"router-{router.id}"))
    press(f"#router-{router.id} form[action$='/remove'] button")
    wait.until(lambda d: "Removed the subnet from the router." in d.page_source)
    press(f"#router-{router.id} form[action$='/delete'] button")
    confirm()
    wait.until(lambda d: "Deleted the router." in d.page_source)
    press(f"#network-{net.id} form[action$='/delete'] button")
    confirm()
    wait.until(lambda d: "Deleted the network." in d.page_source)
    assert list_volumes(demo) == [] and list_routers(demo) == []
    assert [n for n in list_networks(demo) if not n.external] == []
    assert same_page(), "the page was reloaded"
    blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []

    # -- sign out: the session's cookie opens nothing afterwards ------------------------------------
    cookie = {"yun_session": browser.get_cookie("yun_session")["value"]}
    instances = f"{cloud.url}/dashboard/project/instances"
    assert httpx.get(instances, cookies=cookie).status_code == 200
    browser.find_element(By.ID, "sign-out").click()
    wait.until(lambda d: "/dashboard/login" in d.current_url)
    assert "You have signed out." in browser.page_source
    r = httpx.get(instances, cookies=cookie)
    assert r.status_code == 303 and r.headers["location"].endswith("/dashboard/login?m=expired")
