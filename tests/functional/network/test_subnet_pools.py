"""Subnet pools (subnet_allocation): CRUD, bounds, and subnets carved from the next free prefix."""

from __future__ import annotations

from typing import Any

from tests.functional.network.conftest import Net


def pool(net: Net, **attrs: Any) -> dict[str, Any]:
    return net.made("/subnetpools", "subnetpool", **{"name": "p", "prefixes": ["10.100.0.0/16"], **attrs})


def test_a_subnet_pool_has_neutrons_shape_and_defaults(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    made = pool(alice, prefixes=["10.100.0.0/17", "10.100.128.0/17"], default_prefixlen=24, max_prefixlen=28)
    assert made["prefixes"] == ["10.100.0.0/16"]  # adjacent prefixes merged
    assert (made["ip_version"], made["default_prefixlen"], made["min_prefixlen"], made["max_prefixlen"]) == \
        (4, 24, 8, 28)
    assert made["shared"] is False and made["is_default"] is False and made["address_scope_id"] is None
    assert alice.get(f"/subnetpools/{made['id']}").json()["subnetpool"] == made
    assert [p["id"] for p in alice.get("/subnetpools").json()["subnetpools"]] == [made["id"]]
    assert world["bob"].get(f"/subnetpools/{made['id']}").status_code == 404
    assert "subnet_allocation" in {e["alias"] for e in alice.get("/extensions").json()["extensions"]}
    r = alice.put(f"/subnetpools/{made['id']}", {"subnetpool": {"prefixes": ["10.100.0.0/16", "10.101.0.0/16"],
                                                                "name": "grown"}})
    assert r.status_code == 200 and r.json()["subnetpool"]["prefixes"] == ["10.100.0.0/15"]
    r = alice.put(f"/subnetpools/{made['id']}", {"subnetpool": {"prefixes": ["10.100.0.0/16"]}})
    assert r.status_code == 400  # prefixes may only grow
    assert alice.put(f"/subnetpools/{made['id']}/tags/blue").status_code == 201
    assert alice.get(f"/subnetpools/{made['id']}").json()["subnetpool"]["tags"] == ["blue"]
    assert alice.delete(f"/subnetpools/{made['id']}").status_code == 204


def test_bad_pools_are_400_and_shared_or_default_pools_are_admin_only(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    for attrs in ({"prefixes": ["10.0.0.1/16"]}, {"prefixes": ["junk"]}, {"prefixes": ["10.0.0.0/8", "fd00::/8"]},
                  {"prefixes": []}, {"default_prefixlen": 30, "max_prefixlen": 28},
                  {"min_prefixlen": 40}, {"name": "a\nb"}):
        r = alice.post("/subnetpools", {"subnetpool": {"name": "p", "prefixes": ["10.0.0.0/8"], **attrs}})
        assert r.status_code == 400, (attrs, r.text)
        assert "NeutronError" in r.json()
    for attrs in ({"shared": True}, {"is_default": True}):
        r = alice.post("/subnetpools", {"subnetpool": {"name": "p", "prefixes": ["10.0.0.0/8"], **attrs}})
        assert r.status_code == 403 and r.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    admin: Net = world["admin"]
    shared = pool(admin, shared=True, is_default=True)
    assert world["bob"].get(f"/subnetpools/{shared['id']}").status_code == 200
    r = admin.post("/subnetpools", {"subnetpool": {"name": "q", "prefixes": ["10.200.0.0/16"], "is_default": True}})
    assert r.status_code == 400  # one default per IP version


def test_subnets_get_the_next_free_prefix_of_the_requested_length(world: dict[str, Any]) -> None:
    alice: Net = world["alice"]
    p = pool(alice, prefixes=["10.100.0.0/22"], default_prefixlen=24, min_prefixlen=23)
    n1, n2 = alice.network("n1"), alice.network("n2")
    first = alice.made("/subnets", "subnet", network_id=n1["id"], subnetpool_id=p["id"], ip_version=4)
    assert first["cidr"] == "10.100.0.0/24" and first["subnetpool_id"] == p["id"]
    assert first["gateway_ip"] == "10.100.0.1"
    second = alice.made("/subnets", "subnet", network_id=n2["id"], subnetpool_id=p["id"], ip_version=4,
                        prefixlen=23)
    assert second["cidr"] == "10.100.2.0/23"
    third = alice.made("/subnets", "subnet", network_id=n2["id"], subnetpool_id=p["id"], ip_version=4,
                       cidr="10.100.1.0/24")
    assert third["cidr"] == "10.100.1.0/24"
    n3 = alice.network("n3")
    r = alice.post("/subnets", {"subnet": {"network_id": n3["id"], "subnetpool_id": p["id"], "ip_version": 4}})
    assert r.status_code == 400 and "Insufficient prefix space" in r.json()["NeutronError"]["message"]
    for attrs in ({"cidr": "10.100.1.0/24"}, {"cidr": "10.200.0.0/24"}, {"prefixlen": 30}, {"prefixlen": 16},
                  {"ip_version": 6}):
        body = {"network_id": n3["id"], "subnetpool_id": p["id"], "ip_version": 4, **attrs}
        r = alice.post("/subnets", {"subnet": body})
        assert r.status_code == 400, (attrs, r.text)
    assert alice.post("/subnets", {"subnet": {"network_id": n3["id"], "ip_version": 4}}).status_code == 400
    r = alice.post("/subnets", {"subnet": {"network_id": n3["id"], "subnetpool_id": "nope", "ip_version": 4}})
    assert r.status_code == 404 and r.json()["NeutronError"]["type"] == "SubnetPoolNotFound"
    r = alice.delete(f"/subnetpools/{p['id']}")
    assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "SubnetPoolInUse"
    assert alice.delete(f"/subnets/{first['id']}").status_code == 204
    again = alice.made("/subnets", "subnet", network_id=n3["id"], subnetpool_id=p["id"], ip_version=4)
    assert again["cidr"] == "10.100.0.0/24"  # a freed prefix is handed out again


def test_another_projects_private_pool_cannot_be_used(world: dict[str, Any]) -> None:
    p = pool(world["alice"])
    bob: Net = world["bob"]
    net = bob.network()
    r = bob.post("/subnets", {"subnet": {"network_id": net["id"], "subnetpool_id": p["id"], "ip_version": 4}})
    assert r.status_code == 404
