"""The overview (the project's quota use as rings and in words) and the network topology picture;
project scope, readers, escaping."""

from __future__ import annotations

import re
from typing import Any

from tests.functional.compute.test_servers import boot, until
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers
from tests.functional.dashboard.test_floating_ips_page import inside
from tests.functional.dashboard.test_networks_page import external, neutron

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
OVERVIEW, TOPOLOGY = f"{D}/project/overview", f"{D}/project/network-topology"
V = "/volume/v3"


def captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>([^<]+)</figcaption>", page)


def a_volume(dash: dict[str, Any], who: str, size: int) -> None:
    h = {"X-Auth-Token": dash[who].token}
    r = dash["api"].http.post(f"{V}/volumes", json={"volume": {"name": "data", "size": size}}, headers=h)
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    until(lambda: dash["api"].http.get(f"{V}/volumes/{vid}", headers=h).json()["volume"]["status"] == "available")


def test_the_overview_shows_the_projects_use_of_each_quota(dash: dict[str, Any]) -> None:
    flavor = dash["alice"].get("/flavors/42").json()["flavor"]
    boot(dash, name="vm")
    a_volume(dash, "alice", 2)
    page = dash["browser"]("alice").http.get(OVERVIEW)
    assert page.status_code == 200, page.text
    assert_secure_headers(page)
    assert f'href="{D}/project/overview" aria-current="page"' in page.text
    shown = captions(page.text)
    assert shown[:6] == ["1 of 10 instances", f"{flavor['vcpus']} of 20 vCPUs",
                         f"{flavor['ram']:,} of 51,200 MiB of RAM", "1 of 10 volumes",
                         "2 of 1,000 GiB of volumes and snapshots", "0 of 10 volume snapshots"], shown
    assert shown[6:10] == ["0 of 50 floating IPs", "0 of 100 networks", "0 of 500 ports", "0 of 10 routers"], shown
    assert re.fullmatch(r"[01] of 10 security groups", shown[10]), shown  # the default group, once it is made
    assert page.text.count('<svg class="ring"') == 11 and "10%" in page.text  # 1 of 10 instances
    assert "<style" not in page.text and "style=" not in page.text  # the CSP allows no inline style


def test_an_unlimited_quota_says_no_limit(dash: dict[str, Any]) -> None:
    r = dash["admin"].put(f"/os-quota-sets/{dash['a']['project_id']}", {"quota_set": {"instances": -1}})
    assert r.status_code == 200, r.text
    page = dash["browser"]("alice").http.get(OVERVIEW).text
    assert "0 instances, no limit" in captions(page)
    assert 'class="track unlimited"' in page


def test_a_reader_sees_the_overview_and_another_projects_use_does_not_leak(dash: dict[str, Any]) -> None:
    boot(dash, dash["bob"], name="theirs")
    a_volume(dash, "bob", 3)
    neutron(dash, "bob", "POST", "/networks", network={"name": "beta-net"})
    for who in ("rita", "alice"):
        page = dash["browser"](who).http.get(OVERVIEW)
        assert page.status_code == 200, page.text
        shown = captions(page.text)
        assert "0 of 10 instances" in shown and "0 of 10 volumes" in shown and "0 of 100 networks" in shown, shown
        assert "0 of 1,000 GiB of volumes and snapshots" in shown
    bob = captions(dash["browser"]("bob").http.get(OVERVIEW).text)
    assert "1 of 10 instances" in bob and "1 of 100 networks" in bob
    assert "3 of 1,000 GiB of volumes and snapshots" in bob


def test_the_topology_shows_a_network_a_router_joined_to_it_and_a_server_on_it(dash: dict[str, Any]) -> None:
    public = external(dash)
    net, subnet = inside(dash)
    router = neutron(dash, "alice", "POST", "/routers", router={
        "name": "edge", "external_gateway_info": {"network_id": public}})["router"]["id"]
    neutron(dash, "alice", "PUT", f"/routers/{router}/add_router_interface", subnet_id=subnet)
    boot(dash, name="web", networks=[{"uuid": net}])
    theirs, _ = inside(dash, "bob", "10.30.0.0/24")
    neutron(dash, "bob", "POST", "/routers", router={"name": "beta-router"})
    boot(dash, dash["bob"], name="beta-vm", networks=[{"uuid": theirs}])
    alice = dash["browser"]("alice")
    assert f'href="{D}/project/network-topology"' in alice.http.get(f"{D}/project/networks").text
    page = alice.http.get(TOPOLOGY)
    assert page.status_code == 200, page.text
    assert_secure_headers(page)
    svg = re.search(r'<svg class="topology".*?</svg>', page.text, re.S)
    assert svg, page.text
    picture = svg.group(0)
    assert "alice-net" in picture and "10.20.0.0/24" in picture  # (the external subnet is the admin's: not listed)
    assert '<g class="network external"><title>public: external</title>' in picture
    assert "<title>router edge</title>" in picture and "<title>server web</title>" in picture
    # the router: a line to alice-net (the first bar, x = 70) and a dashed one, 9 lower, to public (the second, 190);
    # the server, in the next row, one line to alice-net
    assert re.findall(r'<path class="(link[a-z ]*)" d="M(\d+) (\d+)H', picture) == [
        ("link", "70", "79"), ("link gateway", "190", "88"), ("link", "70", "123")], picture
    assert "1 network" not in page.text and "2 networks, 1 router, 1 server." in page.text
    assert "beta" not in page.text and "10.30.0.0" not in page.text


def test_the_topology_escapes_names_and_a_reader_sees_it(dash: dict[str, Any]) -> None:
    name = "<script>alert(1)</script>"
    neutron(dash, "alice", "POST", "/networks", network={"name": name})
    page = dash["browser"]("rita").http.get(TOPOLOGY)
    assert page.status_code == 200
    assert name not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_a_project_without_networks_has_an_empty_topology(dash: dict[str, Any]) -> None:
    page = dash["browser"]("alice").http.get(TOPOLOGY).text
    assert "no networks yet" in page and "0 networks, 0 routers, 0 servers." in page
