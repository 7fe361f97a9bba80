"""One project cannot hurt or impersonate another through the Neutron API (each test is the attack)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.network.conftest import Net


def neutron_error(r: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = dict(r.json()["NeutronError"])
    assert set(err) == {"type", "message", "detail"}
    if kind is not None:
        assert err["type"] == kind, err
    return err


@pytest.fixture
def shared(world: dict[str, Any]) -> dict[str, Any]:
    admin: Net = world["admin"]
    net = admin.network("shared", shared=True)
    return {"net": net, "sub": admin.subnet(net["id"], "10.80.0.0/24")}


def test_a_bad_mac_in_allowed_address_pairs_is_400_and_never_stored(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    net = alice.network()
    alice.subnet(net["id"], "10.81.0.0/24")
    for mac in ("x", "01:00:5e:00:00:01", "fa:16:3e:00:00:0g", "fa:16:3e:00:00:01 -j ACCEPT"):
        r = alice.post("/ports", {"port": {"network_id": net["id"], "allowed_address_pairs": [
            {"ip_address": "10.81.0.50", "mac_address": mac}]}})
        err = neutron_error(r, 400, "InvalidInput")
        assert "allowed_address_pairs mac_address" in err["message"]
    port = alice.port(net["id"])
    r = alice.put(f"/ports/{port['id']}", {"port": {"allowed_address_pairs": [
        {"ip_address": "10.81.0.50", "mac_address": "x"}]}})
    neutron_error(r, 400, "InvalidInput")
    r = alice.put(f"/ports/{port['id']}", {"port": {"allowed_address_pairs": [{"ip_address": "10.81.0.0/33"}]}})
    assert "allowed_address_pairs ip_address" in neutron_error(r, 400, "InvalidInput")["message"]
    assert alice.get(f"/ports/{port['id']}").json()["port"]["allowed_address_pairs"] == []
    ok = alice.put(f"/ports/{port['id']}", {"port": {"allowed_address_pairs": [
        {"ip_address": "10.81.0.50", "mac_address": "FA-16-3E-00-00-01"}]}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["port"]["allowed_address_pairs"] == [{"ip_address": "10.81.0.50",
                                                           "mac_address": "fa:16:3e:00:00:01"}]


def test_control_characters_in_names_and_descriptions_are_400(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    r = alice.post("/networks", {"network": {"name": "evil\nline"}})
    err = neutron_error(r, 400)
    assert "network.name" in err["message"] and "control characters" in err["message"]
    net = alice.network()
    r = alice.put(f"/networks/{net['id']}", {"network": {"description": "a\x00b"}})
    assert "network.description" in neutron_error(r, 400)["message"]
    r = alice.post("/security-groups", {"security_group": {"name": "g\r\n-A FORWARD -j ACCEPT"}})
    neutron_error(r, 400)
    r = alice.post("/ports", {"port": {"network_id": net["id"], "device_id": "x\ny"}})
    neutron_error(r, 400)
    assert alice.post("/networks", {"network": {"name": "ünïcode ok"}}).status_code == 201


def test_security_group_rules_refuse_an_ipv6_only_protocol_for_ipv4(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    group = alice.made("/security-groups", "security_group", name="g")
    for protocol in ("ipv6-icmp", "icmpv6", "58"):
        r = alice.post("/security-group-rules", {"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": protocol}})
        assert "ethertype" in neutron_error(r, 400)["message"]
    r = alice.post("/security-group-rules", {"security_group_rule": {
        "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4",
        "remote_ip_prefix": "fd00::/64"}})
    neutron_error(r, 400)


def test_on_a_shared_network_only_its_owner_may_choose_addresses_macs_pairs_and_port_security(
        world: dict[str, Any], shared: dict[str, Any]) -> None:
    bob: Net = world["bob"]
    net_id, sub_id = shared["net"]["id"], shared["sub"]["id"]
    attempts = {
        "mac_address": {"mac_address": "fa:16:3e:11:22:33"},
        "fixed_ips:ip_address": {"fixed_ips": [{"subnet_id": sub_id, "ip_address": "10.80.0.77"}]},
        "allowed_address_pairs": {"allowed_address_pairs": [{"ip_address": "10.80.0.0/24"}]},
        "port_security_enabled": {"port_security_enabled": False},
    }
    for field, attrs in attempts.items():
        err = neutron_error(bob.post("/ports", {"port": {"network_id": net_id, **attrs}}), 403,
                            "PolicyNotAuthorized")
        assert f"create_port:{field}" in err["message"]
    port = bob.port(net_id, fixed_ips=[{"subnet_id": sub_id}])  # a subnet alone is fine
    for field, attrs in attempts.items():
        if field == "mac_address":
            continue  # update_port:mac_address is admin-only everywhere
        err = neutron_error(bob.put(f"/ports/{port['id']}", {"port": attrs}), 403, "PolicyNotAuthorized")
        assert f"update_port:{field}" in err["message"]
    assert bob.put(f"/ports/{port['id']}", {"port": {"name": "fine"}}).status_code == 200
    owned = world["admin"].port(net_id, fixed_ips=[{"subnet_id": sub_id, "ip_address": "10.80.0.77"}],
                                allowed_address_pairs=[{"ip_address": "10.80.0.0/24"}])
    assert owned["fixed_ips"][0]["ip_address"] == "10.80.0.77"


def test_subnets_of_an_external_network_that_is_not_shared_stay_with_its_owner(world: dict[str, Any]) -> None:
    admin, bob = world["admin"], world["bob"]
    ext = admin.network("ext", **{"router:external": True})
    sub = admin.subnet(ext["id"], "172.30.9.0/24", enable_dhcp=False)
    assert bob.get(f"/networks/{ext['id']}").status_code == 200  # the network itself is visible
    assert all(s["id"] != sub["id"] for s in bob.get("/subnets").json()["subnets"])
    neutron_error(bob.get(f"/subnets/{sub['id']}"), 404, "SubnetNotFound")
    both = admin.network("ext-shared", shared=True, **{"router:external": True})
    open_sub = admin.subnet(both["id"], "172.30.10.0/24", enable_dhcp=False)
    assert bob.get(f"/subnets/{open_sub['id']}").status_code == 200


def test_a_router_gateway_on_an_unknown_or_invisible_network_is_404(world: dict[str, Any]) -> None:
    alice, bob = world["alice"], world["bob"]
    r = alice.post("/routers", {"router": {"name": "r", "external_gateway_info": {"network_id": "nope"}}})
    neutron_error(r, 404, "NetworkNotFound")
    router = alice.made("/routers", "router", name="r")
    hidden = bob.network("bobs")
    r = alice.put(f"/routers/{router['id']}", {"router": {"external_gateway_info": {"network_id": hidden["id"]}}})
    neutron_error(r, 404, "NetworkNotFound")


def test_extension_list_names_extra_routes(api: Api, world: dict[str, Any]) -> None:
    aliases = {e["alias"] for e in world["alice"].get("/extensions").json()["extensions"]}
    assert {"extraroute", "extraroute-atomic"} <= aliases
