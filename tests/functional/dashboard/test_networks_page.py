"""The networks page: networks with subnets, routers with a gateway and interfaces; project scope,
readers, escaping and the API's messages."""

from __future__ import annotations

import re
from typing import Any

from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
N = "/networking/v2.0"


def neutron(dash: dict[str, Any], who: str, method: str, path: str, **body: Any) -> Any:
    r = dash["api"].http.request(method, f"{N}{path}", json=body or None, headers={"X-Auth-Token": dash[who].token})
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def external(dash: dict[str, Any]) -> str:
    net = neutron(dash, "admin", "POST", "/networks", network={"name": "public", "router:external": True})["network"]
    neutron(dash, "admin", "POST", "/subnets", subnet={"network_id": net["id"], "cidr": "172.30.0.0/24",
                                                       "ip_version": 4, "enable_dhcp": False})
    return str(net["id"])


def test_a_network_with_a_subnet_and_a_router_with_a_gateway_and_an_interface(dash: dict[str, Any]) -> None:
    public = external(dash)
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/networks")
    assert page.status_code == 200 and f'<option value="{public}">public</option>' in page.text
    assert_secure_headers(page)
    r = alice.http.post(f"{D}/project/networks", data={"csrf_token": alice.csrf(), "name": "inside",
                                                       "cidr": "10.20.0.0/24", "gateway_ip": "10.20.0.254",
                                                       "enable_dhcp": "on"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/networks"
    [net] = [n for n in neutron(dash, "alice", "GET", "/networks")["networks"] if n["name"] == "inside"]
    [sub] = neutron(dash, "alice", "GET", f"/subnets?network_id={net['id']}")["subnets"]
    assert sub["cidr"] == "10.20.0.0/24" and sub["gateway_ip"] == "10.20.0.254" and sub["enable_dhcp"] is True
    page = alice.http.get(f"{D}/project/networks").text
    assert "Created the network inside with the subnet 10.20.0.0/24." in page and "gateway 10.20.0.254" in page
    r = alice.http.post(f"{D}/project/routers", data={"csrf_token": alice.csrf(), "name": "r1",
                                                      "external_network_id": public})
    assert r.status_code == 303
    [router] = neutron(dash, "alice", "GET", "/routers")["routers"]
    assert router["external_gateway_info"]["network_id"] == public
    r = alice.http.post(f"{D}/project/routers/{router['id']}/add", data={"csrf_token": alice.csrf(),
                                                                         "subnet_id": sub["id"]})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/networks").text
    assert "Added the subnet to the router." in page
    row = re.search(rf'<tr id="router-{router["id"]}">(.*?)</tr>', page, re.S)
    assert row and "inside 10.20.0.0/24" in row.group(1) and "public" in row.group(1), page
    r = alice.http.post(f"{D}/project/networks/{net['id']}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>', alice.http.get(f"{D}/project/networks").text)
    assert shown, "deleting a network a router still uses is refused with the API's message"
    for verb in ("remove", "delete"):
        r = alice.http.post(f"{D}/project/routers/{router['id']}/{verb}", data={"csrf_token": alice.csrf(),
                                                                                "subnet_id": sub["id"]})
        assert r.status_code == 303
        assert 'class="error"' not in alice.http.get(f"{D}/project/networks").text
    r = alice.http.post(f"{D}/project/networks/{net['id']}/delete", data={"csrf_token": alice.csrf()})
    assert "Deleted the network." in alice.http.get(f"{D}/project/networks").text
    assert neutron(dash, "alice", "GET", "/routers")["routers"] == []


def test_a_bad_cidr_shows_the_apis_message_and_leaves_no_network(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    alice.http.post(f"{D}/project/networks", data={"csrf_token": alice.csrf(), "name": "n", "cidr": "10.0.0.0/99"})
    page = alice.http.get(f"{D}/project/networks").text
    assert re.search(r'<p class="error" role="status">[^<]*10.0.0.0/99', page), page
    assert [n for n in neutron(dash, "alice", "GET", "/networks")["networks"] if n["name"] == "n"] == []


def test_a_network_named_like_a_script_is_shown_as_text(dash: dict[str, Any]) -> None:
    name = "<script>alert(1)</script>"
    alice = dash["browser"]("alice")
    alice.http.post(f"{D}/project/networks", data={"csrf_token": alice.csrf(), "name": name})
    page = alice.http.get(f"{D}/project/networks").text
    assert name not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_another_projects_networks_are_not_shown_and_their_ids_are_404(dash: dict[str, Any]) -> None:
    theirs = neutron(dash, "bob", "POST", "/networks", network={"name": "beta-net"})["network"]["id"]
    router = neutron(dash, "bob", "POST", "/routers", router={"name": "beta-router"})["router"]["id"]
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/networks").text
    assert "beta-net" not in page and "beta-router" not in page
    for path in (f"networks/{theirs}/delete", f"routers/{router}/delete"):
        assert alice.http.post(f"{D}/project/{path}", data={"csrf_token": alice.csrf()}).status_code == 404
    assert neutron(dash, "bob", "GET", f"/networks/{theirs}")["network"]["name"] == "beta-net"


def test_a_reader_sees_no_forms_and_is_refused_when_posting(dash: dict[str, Any]) -> None:
    neutron(dash, "alice", "POST", "/networks", network={"name": "inside"})
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/networks").text
    assert "inside" in page and 'method="post" action="/dashboard/project/networks' not in page
    r = rita.http.post(f"{D}/project/networks", data={"csrf_token": rita.csrf(), "name": "x"})
    assert r.status_code == 403 and "reader" in r.text
    alice = dash["browser"]("alice")
    assert alice.http.post(f"{D}/project/routers", data={"name": "no-csrf"}).status_code == 403
