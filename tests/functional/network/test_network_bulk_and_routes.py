"""Bulk port create (all or nothing) and router extra routes (extraroute, extraroute-atomic)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.functional.network.conftest import Net


def test_bulk_port_create_makes_every_port_in_one_request(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    net = alice.network()
    alice.subnet(net["id"], "10.82.0.0/24")
    r = alice.post("/ports", {"ports": [{"network_id": net["id"], "name": "p1"},
                                        {"network_id": net["id"], "name": "p2"}]})
    assert r.status_code == 201, r.text
    ports = r.json()["ports"]
    assert [p["name"] for p in ports] == ["p1", "p2"]
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 2
    assert alice.post("/ports", {"port": {"network_id": net["id"]}, "ports": []}).status_code == 400
    assert alice.post("/ports", {}).status_code == 400


def test_bulk_port_create_is_all_or_nothing(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    net = alice.network()
    alice.subnet(net["id"], "10.83.0.0/24")
    before = len(alice.get("/ports", network_id=net["id"]).json()["ports"])
    for bad in ({"network_id": net["id"], "fixed_ips": [{"ip_address": "10.99.0.5"}]},
                {"network_id": net["id"], "allowed_address_pairs": [{"ip_address": "10.83.0.9", "mac_address": "x"}]},
                {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.83.0.10"}]}):
        r = alice.post("/ports", {"ports": [{"network_id": net["id"], "fixed_ips": [{"ip_address": "10.83.0.10"}]},
                                            bad]})
        assert r.status_code in (400, 409), r.text
        assert "NeutronError" in r.json()
        assert len(alice.get("/ports", network_id=net["id"]).json()["ports"]) == before
    bob_net = world["bob"].network()
    r = alice.post("/ports", {"ports": [{"network_id": net["id"]}, {"network_id": bob_net["id"]}]})
    assert r.status_code == 404
    assert len(alice.get("/ports", network_id=net["id"]).json()["ports"]) == before


def routed(alice: Net) -> dict[str, Any]:
    net = alice.network()
    sub = alice.subnet(net["id"], "10.84.0.0/24")
    router = alice.made("/routers", "router", name="r")
    assert alice.put(f"/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]}).status_code == 200
    return {"net": net, "sub": sub, "router": router}


def test_extra_routes_are_set_shown_and_validated_against_the_routers_subnets(api: Api,
                                                                               world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    x = routed(alice)
    rid = x["router"]["id"]
    assert x["router"]["routes"] == []
    route = {"destination": "192.168.50.0/24", "nexthop": "10.84.0.254"}
    r = alice.put(f"/routers/{rid}", {"router": {"routes": [route]}})
    assert r.status_code == 200, r.text
    assert r.json()["router"]["routes"] == [route]
    assert alice.get(f"/routers/{rid}").json()["router"]["routes"] == [route]
    bad = {
        "not connected": {"destination": "192.168.51.0/24", "nexthop": "10.99.0.1"},
        "the router's own address": {"destination": "192.168.51.0/24", "nexthop": "10.84.0.1"},
    }
    for why, attempt in bad.items():
        r = alice.put(f"/routers/{rid}", {"router": {"routes": [attempt]}})
        assert r.status_code == 400, (why, r.text)
        assert r.json()["NeutronError"]["type"] == "InvalidRoutes"
    for attempt in ({"destination": "192.168.51.1/24", "nexthop": "10.84.0.254"},
                    {"destination": "junk", "nexthop": "10.84.0.254"},
                    {"destination": "192.168.51.0/24", "nexthop": "10.84.0.254; reboot"},
                    {"destination": "fd00::/64", "nexthop": "10.84.0.254"}):
        r = alice.put(f"/routers/{rid}", {"router": {"routes": [attempt]}})
        assert r.status_code == 400, (attempt, r.text)
        assert "routes" in r.json()["NeutronError"]["message"]
    assert alice.get(f"/routers/{rid}").json()["router"]["routes"] == [route]
    # "routes": null clears them (Neutron; Tempest's cleanup sends it); a body without it keeps them.
    assert alice.put(f"/routers/{rid}", {"router": {"name": "kept"}}).json()["router"]["routes"] == [route]
    r = alice.put(f"/routers/{rid}", {"router": {"routes": None}})
    assert r.status_code == 200 and r.json()["router"]["routes"] == []
    assert alice.put(f"/routers/{rid}", {"router": {"routes": [route]}}).status_code == 200
    state = api.services.network.host_state(api.services.config.host_name)
    (mine,) = [rs for rs in state.routers if rs.id == rid]
    assert mine.routes == (("192.168.50.0/24", "10.84.0.254"),)
    r = alice.put(f"/routers/{rid}/remove_router_interface", {"subnet_id": x["sub"]["id"]})
    assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "RouterInterfaceInUseByRoute"
    assert world["bob"].put(f"/routers/{rid}", {"router": {"routes": []}}).status_code == 404
    assert alice.put(f"/routers/{rid}", {"router": {"routes": []}}).json()["router"]["routes"] == []
    assert alice.put(f"/routers/{rid}/remove_router_interface", {"subnet_id": x["sub"]["id"]}).status_code == 200


def test_add_and_remove_extraroutes_edit_the_routes_atomically(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    rid = routed(alice)["router"]["id"]
    one = {"destination": "192.168.60.0/24", "nexthop": "10.84.0.10"}
    two = {"destination": "192.168.61.0/24", "nexthop": "10.84.0.11"}
    r = alice.put(f"/routers/{rid}/add_extraroutes", {"router": {"routes": [one, two]}})
    assert r.status_code == 200, r.text
    assert r.json()["router"]["routes"] == [one, two] and r.json()["router"]["id"] == rid
    again = alice.put(f"/routers/{rid}/add_extraroutes", {"router": {"routes": [one]}}).json()["router"]
    assert again["routes"] == [one, two]
    r = alice.put(f"/routers/{rid}/add_extraroutes", {"router": {"routes": [
        {"destination": "192.168.62.0/24", "nexthop": "10.99.0.1"}]}})
    assert r.status_code == 400
    left = alice.put(f"/routers/{rid}/remove_extraroutes", {"router": {"routes": [one]}}).json()["router"]
    assert left["routes"] == [two]
    assert alice.put(f"/routers/{rid}/remove_extraroutes", {"router": {"routes": [one]}}).status_code == 200
    assert world["bob"].put(f"/routers/{rid}/add_extraroutes", {"router": {"routes": [one]}}).status_code == 404
