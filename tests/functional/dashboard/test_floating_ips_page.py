"""The floating IPs page (allocate, associate with a server's port, disassociate, release) and the
association on a server's page; project scope, readers, CSRF and the API's messages."""

from __future__ import annotations

import re
from typing import Any

from tests.functional.compute.test_servers import boot
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers
from tests.functional.dashboard.test_networks_page import external, neutron

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
PAGE = f"{D}/project/floating-ips"


def inside(dash: dict[str, Any], who: str = "alice", cidr: str = "10.20.0.0/24") -> tuple[str, str]:
    """A network of ``who``'s project with a subnet; its id and the subnet's."""
    net = neutron(dash, who, "POST", "/networks", network={"name": f"{who}-net"})["network"]["id"]
    sub = neutron(dash, who, "POST", "/subnets", subnet={"network_id": net, "cidr": cidr, "ip_version": 4})
    return net, sub["subnet"]["id"]


def routed(dash: dict[str, Any], public: str, subnet: str, who: str = "alice") -> None:
    router = neutron(dash, who, "POST", "/routers", router={"name": "r1",
                                                            "external_gateway_info": {"network_id": public}})
    neutron(dash, who, "PUT", f"/routers/{router['router']['id']}/add_router_interface", subnet_id=subnet)


def floating_ips(dash: dict[str, Any], who: str = "alice") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = neutron(dash, who, "GET", "/floatingips")["floatingips"]
    return found


def error(page: str) -> str:
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>', page)
    assert shown, page
    return shown.group(1)


def test_allocating_associating_disassociating_and_releasing_a_floating_ip(dash: dict[str, Any]) -> None:
    public = external(dash)
    net, subnet = inside(dash)
    server = boot(dash, name="web", networks=[{"uuid": net}])
    [port] = neutron(dash, "alice", "GET", f"/ports?device_id={server['id']}")["ports"]
    alice = dash["browser"]("alice")
    page = alice.http.get(PAGE)
    assert page.status_code == 200 and f'href="{PAGE}" aria-current="page"' in page.text
    assert "No floating IPs in this project yet." in page.text
    assert f'<option value="{public}">public</option>' in page.text
    assert_secure_headers(page)
    r = alice.http.post(PAGE, data={"csrf_token": alice.csrf(), "network_id": public})
    assert r.status_code == 303 and r.headers["location"] == PAGE
    [fip] = floating_ips(dash)
    assert fip["floating_network_id"] == public and fip["port_id"] is None
    page = alice.http.get(PAGE).text
    assert f"Allocated the floating IP {fip['floating_ip_address']}." in page
    fixed = port["fixed_ips"][0]["ip_address"]
    assert f'<option value="{port["id"]}">web {fixed} (alice-net)</option>' in page
    r = alice.http.post(f"{PAGE}/{fip['id']}/associate", data={"csrf_token": alice.csrf(), "port_id": port["id"]})
    assert r.status_code == 303
    assert error(alice.http.get(PAGE).text).startswith(f"External network {public} is not reachable from subnet")
    routed(dash, public, subnet)
    r = alice.http.post(f"{PAGE}/{fip['id']}/associate", data={"csrf_token": alice.csrf(), "port_id": port["id"]})
    assert r.status_code == 303
    [fip] = floating_ips(dash)
    assert fip["port_id"] == port["id"] and fip["fixed_ip_address"] == fixed
    page = alice.http.get(PAGE).text
    assert f"Associated the floating IP {fip['floating_ip_address']} with {fixed}." in page
    row = re.search(rf'<tr id="floating-ip-{fip["id"]}">(.*?)</tr>', page, re.S)
    assert row, page
    assert f'<a href="{D}/project/instances/{server["id"]}">web</a>' in row.group(1)
    assert fixed in row.group(1) and "public" in row.group(1) and "ACTIVE" in row.group(1)
    assert "/disassociate" in row.group(1) and "/associate" not in row.group(1).replace("/disassociate", "")
    r = alice.http.post(f"{PAGE}/{fip['id']}/disassociate", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    assert floating_ips(dash)[0]["port_id"] is None
    assert f"Disassociated the floating IP {fip['floating_ip_address']}." in alice.http.get(PAGE).text
    r = alice.http.post(f"{PAGE}/{fip['id']}/release", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    assert "Released the floating IP." in alice.http.get(PAGE).text and floating_ips(dash) == []
    assert alice.http.post(f"{PAGE}/{fip['id']}/rename", data={"csrf_token": alice.csrf()}).status_code == 404


def test_a_servers_page_associates_a_free_floating_ip(dash: dict[str, Any]) -> None:
    public = external(dash)
    net, subnet = inside(dash)
    routed(dash, public, subnet)
    server = boot(dash, name="web", networks=[{"uuid": net}])
    [port] = neutron(dash, "alice", "GET", f"/ports?device_id={server['id']}")["ports"]
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances/{server['id']}").text
    assert 'id="associate-floating-ip"' not in page and "No free floating IP" in page
    fip = neutron(dash, "alice", "POST", "/floatingips", floatingip={"floating_network_id": public})["floatingip"]
    page = alice.http.get(f"{D}/project/instances/{server['id']}").text
    assert f'<option value="{fip["id"]}">{fip["floating_ip_address"]}</option>' in page
    other = boot(dash, name="other", networks=[{"uuid": net}])
    r = alice.http.post(f"{D}/project/instances/{other['id']}/floating-ip", data={
        "csrf_token": alice.csrf(), "floating_ip_id": fip["id"], "port_id": port["id"]})
    assert r.status_code == 303
    assert error(alice.http.get(f"{D}/project/instances/{other['id']}").text) == \
        "That port is not one of this server&#39;s."
    theirs = boot(dash, dash["bob"], name="theirs")
    r = alice.http.post(f"{D}/project/instances/{theirs['id']}/floating-ip", data={
        "csrf_token": alice.csrf(), "floating_ip_id": fip["id"], "port_id": port["id"]})
    assert r.status_code == 404
    assert floating_ips(dash)[0]["port_id"] is None
    r = alice.http.post(f"{D}/project/instances/{server['id']}/floating-ip", data={
        "csrf_token": alice.csrf(), "floating_ip_id": fip["id"], "port_id": port["id"]})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances/{server['id']}"
    assert floating_ips(dash)[0]["port_id"] == port["id"]
    page = alice.http.get(f"{D}/project/instances/{server['id']}").text
    assert f"Associated the floating IP {fip['floating_ip_address']}" in page
    assert 'id="associate-floating-ip"' not in page  # no free one left
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/instances/{server['id']}").text
    assert "web" in page and f"/project/instances/{server['id']}/floating-ip" not in page
    r = rita.http.post(f"{D}/project/instances/{server['id']}/floating-ip", data={
        "csrf_token": rita.csrf(), "floating_ip_id": fip["id"], "port_id": port["id"]})
    assert r.status_code == 403 and "reader" in r.text


def test_another_projects_floating_ips_are_not_shown_and_their_ids_are_404(dash: dict[str, Any]) -> None:
    public = external(dash)
    theirs = neutron(dash, "bob", "POST", "/floatingips", floatingip={"floating_network_id": public})["floatingip"]
    alice = dash["browser"]("alice")
    page = alice.http.get(PAGE).text
    assert theirs["floating_ip_address"] not in page and theirs["id"] not in page
    for verb in ("associate", "disassociate", "release"):
        r = alice.http.post(f"{PAGE}/{theirs['id']}/{verb}", data={"csrf_token": alice.csrf(), "port_id": "x"})
        assert r.status_code == 404, r.text
    assert [f["id"] for f in floating_ips(dash, "bob")] == [theirs["id"]]


def test_a_reader_sees_the_floating_ips_without_forms_and_is_refused_when_posting(dash: dict[str, Any]) -> None:
    public = external(dash)
    fip = neutron(dash, "alice", "POST", "/floatingips", floatingip={"floating_network_id": public})["floatingip"]
    rita = dash["browser"]("rita")
    page = rita.http.get(PAGE).text
    assert fip["floating_ip_address"] in page and 'method="post" action="/dashboard/project/floating-ips' not in page
    assert "Actions" not in page
    for path in ("", f"/{fip['id']}/release"):
        r = rita.http.post(f"{PAGE}{path}", data={"csrf_token": rita.csrf(), "network_id": public})
        assert r.status_code == 403 and "reader" in r.text
    alice = dash["browser"]("alice")
    assert alice.http.post(PAGE, data={"network_id": public}).status_code == 403
    assert alice.http.post(f"{PAGE}/{fip['id']}/release", data={"csrf_token": "wrong"}).status_code == 403
    assert [f["id"] for f in floating_ips(dash)] == [fip["id"]]


def test_without_an_external_network_the_page_says_so(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    page = alice.http.get(PAGE).text
    assert "There is no external network" in page and 'id="allocate-floating-ip"' not in page
    r = alice.http.post(PAGE, data={"csrf_token": alice.csrf(), "network_id": ""})
    assert r.status_code == 303 and error(alice.http.get(PAGE).text) == "Choose an external network."
