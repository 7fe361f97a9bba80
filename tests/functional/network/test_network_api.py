"""Neutron v2.0 through the whole in-process API, on SQLite and on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import Api
from tests.functional.network.conftest import N

STANDARD = {"id", "project_id", "tenant_id", "created_at", "updated_at", "revision_number", "description", "tags"}


def test_version_document_resources_and_a_truthful_extension_list(api: Api, world: dict[str, Any]) -> None:
    for path in ("/networking", "/networking/"):
        v = api.http.get(path).json()["versions"][0]
        assert v["id"] == "v2.0" and v["status"] == "CURRENT"
        assert v["links"][0]["href"] == "http://127.0.0.1:8080/networking/v2.0/"
    alice = world["alice"]
    names = {r["collection"] for r in alice.get("").json()["resources"]}
    assert {"networks", "subnets", "ports", "routers", "floatingips", "security-groups"} <= names
    aliases = {e["alias"] for e in alice.get("/extensions").json()["extensions"]}
    assert {"external-net", "router", "quotas", "security-group", "port-security", "allowed-address-pairs",
            "standard-attr-tag", "binding", "provider"} <= aliases
    assert not aliases & {"dvr", "l3-ha", "address-scope", "multi-provider", "dns-integration"}
    assert alice.get("/extensions/router").json()["extension"]["alias"] == "router"
    assert alice.get("/extensions/dvr").status_code == 404


def test_admins_see_the_vxlan_segment_of_a_network_and_members_do_not(world: dict[str, Any]) -> None:
    alice, admin = world["alice"], world["admin"]
    net = alice.network("seg")
    assert not [k for k in net if k.startswith("provider:")]
    seen = admin.get(f"/networks/{net['id']}").json()["network"]
    assert seen["provider:network_type"] == "vxlan" and seen["provider:physical_network"] is None
    assert isinstance(seen["provider:segmentation_id"], int) and seen["provider:segmentation_id"] > 0
    listed = {n["id"]: n for n in admin.get("/networks").json()["networks"]}
    assert listed[net["id"]]["provider:segmentation_id"] == seen["provider:segmentation_id"]
    ext = admin.network("ext", **{"router:external": True})
    assert ext["provider:network_type"] == "local" and ext["provider:segmentation_id"] is None


def test_only_admins_choose_a_vni_and_a_taken_or_foreign_one_is_refused(world: dict[str, Any]) -> None:
    alice, admin = world["alice"], world["admin"]
    r = alice.post("/networks", {"network": {"name": "x", "provider:segmentation_id": 4242}})
    assert r.status_code == 403 and r.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    made = admin.network("mine", **{"provider:network_type": "vxlan", "provider:segmentation_id": 4242})
    assert made["provider:segmentation_id"] == 4242
    r = admin.post("/networks", {"network": {"name": "again", "provider:segmentation_id": 4242}})
    assert r.status_code == 409 and "tunnel ID 4242 is in use" in r.json()["NeutronError"]["message"]
    for bad in ({"provider:network_type": "vlan"}, {"provider:physical_network": "physnet1"},
                {"provider:segmentation_id": 2**24}, {"provider:segmentation_id": 0}):
        r = admin.post("/networks", {"network": {"name": "bad", **bad}})
        assert r.status_code == 400 and r.json()["NeutronError"]["type"] == "InvalidInput", (bad, r.text)


def test_network_crud_shapes_and_neutron_faults(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network("n1")
    assert STANDARD <= set(net)
    assert net["router:external"] is False and net["shared"] is False and net["mtu"] == 1450
    assert net["status"] == "ACTIVE" and net["subnets"] == [] and net["port_security_enabled"] is True
    assert net["project_id"] == net["tenant_id"] == world["a"]["project_id"]
    r = alice.put(f"/networks/{net['id']}", {"network": {"name": "n2", "description": "d"}})
    assert r.status_code == 200 and r.json()["network"]["name"] == "n2"
    assert r.json()["network"]["revision_number"] > net["revision_number"]
    r = alice.get("/networks/nope")
    assert r.status_code == 404
    assert r.json()["NeutronError"]["type"] == "NetworkNotFound"
    assert alice.post("/networks", {"network": {"name": "x", "bogus": 1}}).status_code == 400
    assert alice.delete(f"/networks/{net['id']}").status_code == 204
    assert alice.get(f"/networks/{net['id']}").status_code == 404


def test_cross_project_is_404_and_admin_only_attributes_are_403(world: dict[str, Any]) -> None:
    alice, bob, admin, rita = world["alice"], world["bob"], world["admin"], world["rita"]
    net = alice.network("private")
    assert bob.get(f"/networks/{net['id']}").status_code == 404
    assert bob.delete(f"/networks/{net['id']}").status_code == 404
    assert all(n["id"] != net["id"] for n in bob.get("/networks").json()["networks"])
    r = alice.post("/networks", {"network": {"name": "ext", "router:external": True}})
    assert r.status_code == 403 and r.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    assert alice.post("/networks", {"network": {"name": "sh", "shared": True}}).status_code == 403
    assert rita.post("/networks", {"network": {"name": "ro"}}).status_code == 403
    assert rita.get(f"/networks/{net['id']}").status_code == 200
    shared = admin.network("shared", shared=True)
    assert bob.get(f"/networks/{shared['id']}").status_code == 200
    assert bob.put(f"/networks/{shared['id']}", {"network": {"name": "mine"}}).status_code == 403
    sub = alice.subnet(net["id"])
    assert bob.post("/ports", {"port": {"network_id": net["id"]}}).status_code == 404
    assert bob.get(f"/subnets/{sub['id']}").status_code == 404


def test_subnet_defaults_dhcp_port_and_shapes(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network()
    sub = alice.subnet(net["id"], "10.1.0.0/24", name="s1", dns_nameservers=["8.8.8.8"],
                       host_routes=[{"destination": "10.9.0.0/16", "nexthop": "10.1.0.254"}])
    assert STANDARD <= set(sub)
    assert sub["gateway_ip"] == "10.1.0.1" and sub["enable_dhcp"] is True and sub["ip_version"] == 4
    assert sub["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert sub["dns_nameservers"] == ["8.8.8.8"] and sub["subnetpool_id"] is None
    assert alice.get(f"/networks/{net['id']}").json()["network"]["subnets"] == [sub["id"]]
    ports = alice.get("/ports", network_id=net["id"]).json()["ports"]
    assert [p["device_owner"] for p in ports] == ["network:dhcp"]
    assert ports[0]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.1.0.2"}]
    v6 = alice.subnet(net["id"], "fd00:1::/64", ip_version=6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    assert v6["gateway_ip"] == "fd00:1::1"
    dhcp = alice.get("/ports", network_id=net["id"], device_owner="network:dhcp").json()["ports"]
    assert len(dhcp) == 1 and len(dhcp[0]["fixed_ips"]) == 2
    none = alice.subnet(alice.network()["id"], "10.2.0.0/24", gateway_ip=None, enable_dhcp=False)
    assert none["gateway_ip"] is None and none["allocation_pools"] == [{"start": "10.2.0.1", "end": "10.2.0.254"}]


def test_a_port_on_a_slaac_subnet_gets_the_address_its_guest_makes_from_its_mac(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network()
    alice.subnet(net["id"], "10.3.0.0/24")
    v6 = alice.subnet(net["id"], "fd00:3::/64", ip_version=6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    r = alice.post("/ports", {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:12:34:56"}})
    assert r.status_code == 201, r.text
    port = r.json()["port"]
    # Modified EUI-64 (RFC 4291): the universal/local bit flipped, ff:fe in the middle.
    assert {"subnet_id": v6["id"], "ip_address": "fd00:3::f816:3eff:fe12:3456"} in port["fixed_ips"], port
    dhcp = alice.get("/ports", network_id=net["id"], device_owner="network:dhcp").json()["ports"]
    assert {"subnet_id": v6["id"], "ip_address": "fd00:3::2"} in dhcp[0]["fixed_ips"], dhcp


def test_bad_cidrs_pools_and_overlaps_are_400(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network()

    def status(**attrs: Any) -> int:
        body = {"network_id": net["id"], "ip_version": 4, **attrs}
        r = alice.post("/subnets", {"subnet": body})
        if r.status_code >= 400:
            assert "NeutronError" in r.json()
        return int(r.status_code)

    assert status(cidr="10.0.0.0/33") == 400
    assert status(cidr="banana") == 400
    assert status(cidr="10.0.0.5/24") == 400
    assert status(cidr="fd00::/64") == 400
    assert status(cidr="10.0.0.0/24", allocation_pools=[{"start": "10.0.0.10", "end": "10.0.0.50"},
                                                        {"start": "10.0.0.40", "end": "10.0.0.60"}]) == 400
    assert status(cidr="10.0.0.0/24", allocation_pools=[{"start": "10.0.0.10", "end": "10.0.1.5"}]) == 400
    assert status(cidr="10.0.0.0/24", allocation_pools=[{"start": "10.0.0.1", "end": "10.0.0.5"}]) == 409
    assert status(cidr="10.0.0.0/24") == 201
    assert status(cidr="10.0.0.128/25") == 400


def test_ports_fixed_ips_mac_security_and_address_pairs(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network()
    sub = alice.subnet(net["id"], "10.3.0.0/24")
    p = alice.port(net["id"], name="p1")
    assert STANDARD <= set(p)
    assert p["mac_address"].startswith("fa:16:3e:") and p["status"] == "DOWN"
    assert p["fixed_ips"][0]["subnet_id"] == sub["id"] and p["fixed_ips"][0]["ip_address"] == "10.3.0.3"
    assert p["port_security_enabled"] is True and len(p["security_groups"]) == 1
    assert "binding:host_id" not in p
    fixed = alice.port(net["id"], fixed_ips=[{"ip_address": "10.3.0.50"}], mac_address="fa:16:3e:00:00:01",
                       allowed_address_pairs=[{"ip_address": "10.3.0.200"}])
    assert fixed["fixed_ips"][0]["ip_address"] == "10.3.0.50"
    assert fixed["allowed_address_pairs"] == [{"ip_address": "10.3.0.200", "mac_address": "fa:16:3e:00:00:01"}]
    r = alice.post("/ports", {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.3.0.50"}]}})
    assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "IpAddressAlreadyAllocated"
    r = alice.post("/ports", {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:00:00:01"}})
    assert r.status_code == 409
    open_port = alice.port(net["id"], port_security_enabled=False)
    assert open_port["security_groups"] == [] and open_port["port_security_enabled"] is False
    r = alice.put(f"/ports/{p['id']}", {"port": {"fixed_ips": [{"ip_address": "10.3.0.77"}], "name": "p2"}})
    assert r.status_code == 200 and r.json()["port"]["fixed_ips"][0]["ip_address"] == "10.3.0.77"
    assert alice.delete(f"/ports/{p['id']}").status_code == 204
    assert alice.get(f"/ports/{p['id']}").status_code == 404


def test_concurrent_port_creation_never_hands_out_an_address_twice(world: dict[str, Any]) -> None:
    admin = world["admin"]
    net = admin.network("tiny", shared=True)
    admin.subnet(net["id"], "10.50.0.0/27")  # 29 addresses in the pool, one for DHCP: 28 for ports

    def make(_: int) -> Any:
        return admin.post("/ports", {"port": {"network_id": net["id"]}})

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(make, range(20)))
    assert [r.status_code for r in results] == [201] * 20, [r.text for r in results if r.status_code != 201]
    ips = [ip["ip_address"] for p in admin.get("/ports", network_id=net["id"]).json()["ports"]
           for ip in p["fixed_ips"]]
    assert len(ips) == 21 and len(set(ips)) == 21
    for _ in range(8):
        assert admin.post("/ports", {"port": {"network_id": net["id"]}}).status_code == 201
    r = admin.post("/ports", {"port": {"network_id": net["id"]}})
    assert r.status_code == 409
    assert r.json()["NeutronError"]["message"] == f"No more IP addresses available on network {net['id']}."


def test_deleting_a_network_with_ports_in_use_is_409_and_subnet_in_use_too(world: dict[str, Any]) -> None:
    alice = world["alice"]
    net = alice.network("busy")
    sub = alice.subnet(net["id"])
    p = alice.port(net["id"])
    r = alice.delete(f"/networks/{net['id']}")
    assert r.status_code == 409
    assert r.json()["NeutronError"]["message"] == (
        f"Unable to complete operation on network {net['id']}. There are one or more ports still in use on the "
        "network.")
    assert alice.delete(f"/subnets/{sub['id']}").status_code == 409
    assert alice.delete(f"/ports/{p['id']}").status_code == 204
    assert alice.delete(f"/networks/{net['id']}").status_code == 204  # the DHCP port goes with it


def test_default_security_group_appears_on_first_use_with_neutron_rules(world: dict[str, Any]) -> None:
    bob = world["bob"]
    groups = bob.get("/security-groups").json()["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    rules = {(r["direction"], r["ethertype"], r["remote_group_id"] is not None)
             for r in groups[0]["security_group_rules"]}
    assert rules == {("egress", "IPv4", False), ("egress", "IPv6", False), ("ingress", "IPv4", True),
                     ("ingress", "IPv6", True)}
    assert len(bob.get("/security-groups").json()["security_groups"]) == 1
    sg = bob.made("/security-groups", "security_group", name="sg1", description="sg1")
    assert {(r["direction"], r["ethertype"]) for r in sg["security_group_rules"]} == {("egress", "IPv4"),
                                                                                       ("egress", "IPv6")}
    rule = bob.made("/security-group-rules", "security_group_rule", security_group_id=sg["id"],
                    direction="ingress", ethertype="IPv4", protocol="tcp", port_range_min=22, port_range_max=22,
                    remote_ip_prefix="0.0.0.0/0")
    assert rule["protocol"] == "tcp" and rule["port_range_min"] == 22 and rule["remote_ip_prefix"] == "0.0.0.0/0"
    again = bob.post("/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 22,
        "port_range_max": 22}})
    assert again.status_code == 409 and again.json()["NeutronError"]["type"] == "SecurityGroupRuleExists"

    def bad(**attrs: Any) -> int:
        body = {"security_group_id": sg["id"], "direction": "ingress", **attrs}
        return int(bob.post("/security-group-rules", {"security_group_rule": body}).status_code)

    assert bad(protocol="tcp", port_range_min=30, port_range_max=20) == 400
    assert bad(protocol="bogus") == 400
    assert bad(port_range_min=1, port_range_max=2) == 400
    assert bad(ethertype="IPv6", remote_ip_prefix="10.0.0.0/8") == 400
    assert bad(protocol="gre", port_range_min=1, port_range_max=2) == 400
    assert bad(protocol="icmp", port_range_min=8, port_range_max=0) == 201
    assert bob.delete(f"/security-group-rules/{rule['id']}").status_code == 204
    assert world["alice"].get(f"/security-groups/{sg['id']}").status_code == 404
    assert bob.delete(f"/security-groups/{sg['id']}").status_code == 204


def test_routers_gateway_interfaces_and_floating_ips(api: Api, world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    public = admin.network("ext", **{"router:external": True})
    admin.subnet(public["id"], "172.30.0.0/24", enable_dhcp=False,
                 allocation_pools=[{"start": "172.30.0.10", "end": "172.30.0.20"}])
    assert any(n["id"] == public["id"] for n in alice.get("/networks").json()["networks"])
    net = alice.network("inside")
    sub = alice.subnet(net["id"], "10.20.0.0/24")
    port = alice.port(net["id"])
    fip = alice.made("/floatingips", "floatingip", floating_network_id=public["id"])
    assert STANDARD <= set(fip)
    assert fip["floating_ip_address"] == "172.30.0.10" and fip["status"] == "DOWN" and fip["port_id"] is None
    r = alice.put(f"/floatingips/{fip['id']}", {"floatingip": {"port_id": port["id"]}})
    assert r.status_code == 404
    assert r.json()["NeutronError"]["type"] == "ExternalGatewayForFloatingIPNotFound"
    assert f"External network {public['id']} is not reachable from subnet {sub['id']}" in \
        r.json()["NeutronError"]["message"]
    router = alice.made("/routers", "router", name="r1")
    assert router["external_gateway_info"] is None and STANDARD <= set(router)
    r = alice.put(f"/routers/{router['id']}", {"router": {"external_gateway_info": {"network_id": public["id"]}}})
    assert r.status_code == 200
    gw = r.json()["router"]["external_gateway_info"]
    assert gw["network_id"] == public["id"] and gw["enable_snat"] is True
    assert gw["external_fixed_ips"][0]["ip_address"] == "172.30.0.11"
    r = alice.put(f"/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    assert r.status_code == 200 and r.json()["subnet_id"] == sub["id"] and r.json()["port_id"]
    assert alice.put(f"/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]}).status_code == 400
    iface = alice.get(f"/ports/{r.json()['port_id']}").json()["port"]
    assert iface["device_owner"] == "network:router_interface" and iface["fixed_ips"][0]["ip_address"] == "10.20.0.1"
    r = alice.put(f"/floatingips/{fip['id']}", {"floatingip": {"port_id": port["id"]}})
    assert r.status_code == 200
    assert r.json()["floatingip"]["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    assert r.json()["floatingip"]["router_id"] == router["id"] and r.json()["floatingip"]["status"] == "ACTIVE"
    assert alice.delete(f"/routers/{router['id']}").status_code == 409
    assert alice.put(f"/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]}).status_code == 409
    r = alice.put(f"/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    assert r.json()["floatingip"]["port_id"] is None and r.json()["floatingip"]["status"] == "DOWN"
    r = alice.put(f"/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})
    assert r.status_code == 200
    assert alice.delete(f"/floatingips/{fip['id']}").status_code == 204
    # `openstack router unset --external-gateway` sends {}: it clears the gateway.
    r = alice.put(f"/routers/{router['id']}", {"router": {"external_gateway_info": {}}})
    assert r.status_code == 200 and r.json()["router"]["external_gateway_info"] is None
    r = alice.put(f"/routers/{router['id']}", {"router": {"external_gateway_info": {"enable_snat": False}}})
    assert r.status_code == 400
    assert alice.delete(f"/routers/{router['id']}").status_code == 204
    assert alice.post("/floatingips", {"floatingip": {"floating_network_id": net["id"]}}).status_code == 400


def test_filters_fields_sorting_and_pagination(world: dict[str, Any]) -> None:
    alice = world["alice"]
    made = [alice.network(f"n{i}", admin_state_up=i % 2 == 0) for i in range(5)]
    r = alice.get("/networks", name=["n1", "n3"], fields=["id", "name"]).json()["networks"]
    assert sorted(n["name"] for n in r) == ["n1", "n3"] and all(set(n) == {"id", "name"} for n in r)
    assert {n["name"] for n in alice.get("/networks", admin_state_up="False").json()["networks"]} == {"n1", "n3"}
    ordered = alice.get("/networks", sort_key="name", sort_dir="desc").json()["networks"]
    assert [n["name"] for n in ordered if n["name"].startswith("n")][:2] == ["n4", "n3"]
    page = alice.get("/networks", limit=2, sort_key="name", sort_dir="asc").json()
    assert [n["name"] for n in page["networks"]] == ["n0", "n1"]
    nxt = next(link for link in page["networks_links"] if link["rel"] == "next")
    assert "marker=" in nxt["href"] and nxt["href"].startswith("http://127.0.0.1:8080/networking/v2.0/networks?")
    second = alice.get("/networks", limit=2, sort_key="name", sort_dir="asc", marker=page["networks"][-1]["id"]).json()
    assert [n["name"] for n in second["networks"]] == ["n2", "n3"]
    assert {link["rel"] for link in second["networks_links"]} == {"next", "previous"}
    assert alice.get(f"/networks/{made[0]['id']}", fields="name").json() == {"network": {"name": "n0"}}
    alice.put(f"/networks/{made[0]['id']}/tags/red")
    assert alice.get("/networks", tags="red").json()["networks"][0]["id"] == made[0]["id"]
    assert alice.get(f"/networks/{made[0]['id']}/tags").json() == {"tags": ["red"]}
    assert made[0]["id"] not in {n["id"] for n in alice.get("/networks", **{"not-tags": "red"}).json()["networks"]}


def test_quotas_show_update_details_and_enforcement(world: dict[str, Any]) -> None:
    admin, bob = world["admin"], world["bob"]
    pid = world["b"]["project_id"]
    q = bob.get(f"/quotas/{pid}").json()["quota"]
    assert q == {"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
                 "security_group": 10, "security_group_rule": 100}
    assert bob.put(f"/quotas/{pid}", {"quota": {"network": 1}}).status_code == 403
    assert world["alice"].get(f"/quotas/{pid}").status_code == 403
    assert admin.put(f"/quotas/{pid}", {"quota": {"network": 1}}).json()["quota"]["network"] == 1
    bob.network("only")
    r = bob.post("/networks", {"network": {"name": "two"}})
    assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "OverQuota"
    details = bob.get(f"/quotas/{pid}/details.json").json()["quota"]
    assert details["network"] == {"limit": 1, "used": 1, "reserved": 0}
    # Neutron's check_limit (what `openstack quota set` sends): below what is in use is refused
    # with it, and set without it.
    r = admin.put(f"/quotas/{pid}", {"quota": {"network": 0, "check_limit": True}})
    assert r.status_code == 400 and "already used and reserved 1" in r.text
    r = admin.put(f"/quotas/{pid}", {"quota": {"network": 0, "check_limit": False}})
    assert r.status_code == 200 and r.json()["quota"]["network"] == 0
    assert "check_limit" not in r.json()["quota"]
    assert admin.delete(f"/quotas/{pid}").status_code == 204
    assert bob.get(f"/quotas/{pid}").json()["quota"]["network"] == 100


def test_public_network_bootstrap_is_idempotent(api: Api, world: dict[str, Any]) -> None:
    svc = api.services.network
    admin_pid = world["admin"].get("/quotas/project").json()["project"]["project_id"]
    first = svc.ensure_public_network(svc.config, project_id=admin_pid)
    again = svc.ensure_public_network(svc.config, project_id=admin_pid)
    assert first is not None and again is not None and first.id == again.id and first.external
    # The external network's subnet is the admin's (not shared): members see the network only.
    assert world["alice"].get("/subnets", network_id=first.id).json()["subnets"] == []
    sub = world["admin"].get("/subnets", network_id=first.id).json()["subnets"]
    assert len(sub) == 1 and sub[0]["cidr"] == "172.24.4.0/24" and sub[0]["gateway_ip"] == "172.24.4.1"
    assert sub[0]["allocation_pools"] == [{"start": "172.24.4.10", "end": "172.24.4.250"}]
    assert sub[0]["enable_dhcp"] is False and sub[0]["name"] == "public-subnet"
    pub = world["alice"].get("/networks", name="public").json()["networks"]
    assert pub[0]["router:external"] is True and pub[0]["shared"] is False
    assert N
