"""The calls the compute service and the host agent make, through the service, on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity.context import AuthContext
from yunstack.network import _common
from yunstack.network.desired import tap_name
from yunstack.network.service import NetworkService


def ctx_of(api: Api, net: Any) -> AuthContext:
    return api.services.auth.validate(net.h["X-Auth-Token"])


@pytest.fixture
def setup(api: Api, world: dict[str, Any]) -> dict[str, Any]:
    alice = world["alice"]
    net = alice.network("private")
    sub = alice.subnet(net["id"], "10.60.0.0/24")
    return {"svc": api.services.network, "ctx": ctx_of(api, alice), "net": net, "sub": sub, "alice": alice}


def test_auto_picks_the_projects_only_network_and_deallocate_cleans_up(setup: dict[str, Any]) -> None:
    svc: NetworkService = setup["svc"]
    ctx = setup["ctx"]
    ports = svc.allocate_for_instance(ctx, "inst-1", "hostA", "auto", ["default"], hostname="vm1")
    assert len(ports) == 1
    p = ports[0]
    assert p.network_id == setup["net"]["id"] and p.device_owner == "compute:nova" and p.device_id == "inst-1"
    assert p.binding_host == "hostA" and p.status == "ACTIVE" and len(p.security_groups) == 1
    assert svc.allocate_for_instance(ctx, "inst-x", "hostA", "none", []) == []
    addrs = svc.addresses_for_instances(["inst-1", "inst-2"])
    assert addrs["inst-2"] == {}
    (entry,) = addrs["inst-1"]["private"]
    assert entry == {"version": 4, "addr": p.fixed_ips[0].ip_address, "OS-EXT-IPS:type": "fixed",
                     "OS-EXT-IPS-MAC:mac_addr": p.mac_address}
    holder = svc.instance_for_address(p.network_id, p.fixed_ips[0].ip_address)
    assert holder is not None and (holder.instance_id, holder.host) == ("inst-1", "hostA")
    assert holder.project_id == ctx.project_id
    svc.deallocate_for_instance(ctx, "inst-1")
    assert svc.addresses_for_instances(["inst-1"]) == {"inst-1": {}}
    assert svc.instance_for_address(p.network_id, p.fixed_ips[0].ip_address) is None


def test_explicit_requests_validate_with_nova_messages_and_are_all_or_nothing(setup: dict[str, Any]) -> None:
    svc: NetworkService = setup["svc"]
    ctx, net, alice = setup["ctx"], setup["net"], setup["alice"]
    own = alice.port(net["id"], name="mine")
    with pytest.raises(BadRequest, match="Network nope could not be found"):
        svc.allocate_for_instance(ctx, "i", "h", [{"uuid": "nope"}], [])
    with pytest.raises(BadRequest, match="Security group nosuch not found"):
        svc.allocate_for_instance(ctx, "i", "h", [{"uuid": net["id"]}], ["nosuch"])
    # The second NIC fails, so the first must not be left behind.
    with pytest.raises(BadRequest, match="already in use"):
        svc.allocate_for_instance(ctx, "i", "h", [{"uuid": net["id"]},
                                                  {"uuid": net["id"], "fixed_ip": own["fixed_ips"][0]["ip_address"]}],
                                  ["default"])
    assert [p.name for p in svc.list_ports(ctx) if p.device_owner.startswith("compute")] == []
    ports = svc.allocate_for_instance(ctx, "i", "h", [{"port": own["id"]}, {"uuid": net["id"],
                                                                           "fixed_ip": "10.60.0.99"}], ["default"])
    assert ports[0].id == own["id"] and ports[1].fixed_ips[0].ip_address == "10.60.0.99"
    with pytest.raises(Conflict, match="is still in use"):
        svc.allocate_for_instance(ctx, "j", "h", [{"port": own["id"]}], [])
    svc.deallocate_for_instance(ctx, "i")
    kept = svc.get_port(ctx, own["id"])
    assert kept.device_id == "" and kept.device_owner == "" and kept.fixed_ips
    assert all(p.id == own["id"] or not p.device_owner.startswith("compute") for p in svc.list_ports(ctx))


def test_auto_with_two_private_networks_is_ambiguous(setup: dict[str, Any]) -> None:
    setup["alice"].network("second")
    with pytest.raises(Conflict, match="Multiple possible networks"):
        setup["svc"].allocate_for_instance(setup["ctx"], "i", "h", "auto", [])


def test_attach_and_detach_interface(setup: dict[str, Any]) -> None:
    svc: NetworkService = setup["svc"]
    ctx = setup["ctx"]
    port = svc.attach_interface(ctx, "vm", "hostA")
    assert port.device_id == "vm" and port.network_id == setup["net"]["id"]
    other = svc.attach_interface(ctx, "vm", "hostA", net_id=setup["net"]["id"], fixed_ip="10.60.0.123")
    assert other.fixed_ips[0].ip_address == "10.60.0.123"
    assert len(svc.addresses_for_instances(["vm"])["vm"]["private"]) == 2
    svc.detach_interface(ctx, "vm", port.id)
    with pytest.raises(NotFound):
        svc.detach_interface(ctx, "vm", port.id)
    assert len(svc.addresses_for_instances(["vm"])["vm"]["private"]) == 1


def test_host_state_has_ports_groups_routers_floating_ips_and_metadata(api: Api, setup: dict[str, Any],
                                                                        world: dict[str, Any]) -> None:
    svc: NetworkService = setup["svc"]
    ctx, alice, admin = setup["ctx"], setup["alice"], world["admin"]
    public = admin.network("ext", **{"router:external": True})
    admin.subnet(public["id"], "172.31.0.0/24", enable_dhcp=False)
    (port,) = svc.allocate_for_instance(ctx, "vm1", svc.control_host, "auto", ["default"], hostname="vm1")
    router = alice.made("/routers", "router", name="r", external_gateway_info={"network_id": public["id"]})
    alice.put(f"/routers/{router['id']}/add_router_interface", {"subnet_id": setup["sub"]["id"]})
    fip = alice.made("/floatingips", "floatingip", floating_network_id=public["id"], port_id=port.id)
    state = svc.host_state(svc.control_host)
    (ps,) = state.ports
    assert ps.id == port.id and ps.tap == tap_name(port.id) and ps.hostname == "vm1"
    assert ps.security_group_ids == port.security_groups
    (group,) = state.security_groups
    assert port.fixed_ips[0].ip_address in group.member_ips and len(group.rules) == 4
    net = next(n for n in state.networks if n.id == setup["net"]["id"])
    assert net.segmentation_id > 0 and net.mtu == 1450 and net.dhcp_mac
    assert net.subnets[0].dhcp_ip == "10.60.0.2" and net.subnets[0].gateway_ip == "10.60.0.1"
    (rs,) = state.routers
    assert rs.gateway_network_id == public["id"] and rs.gateway_ip and rs.gateway_prefixlen == 24
    assert rs.interfaces[0].ip_address == "10.60.0.1" and rs.interfaces[0].prefixlen == 24
    assert rs.floating_ips[0].floating_ip_address == fip["floating_ip_address"]
    assert rs.floating_ips[0].fixed_ip_address == port.fixed_ips[0].ip_address
    assert [(m.ip_address, m.instance_id) for m in state.metadata] == [(port.fixed_ips[0].ip_address, "vm1")]
    addrs = svc.addresses_for_instances(["vm1"])["vm1"]["private"]
    assert [a["OS-EXT-IPS:type"] for a in addrs] == ["fixed", "floating"]
    other = svc.host_state("elsewhere")
    assert other.ports == () and other.routers == () and other.networks == ()


def test_ipam_retries_past_addresses_taken_behind_its_back(setup: dict[str, Any], monkeypatch: Any) -> None:
    svc: NetworkService = setup["svc"]
    first = svc.create_port(setup["ctx"], network_id=setup["net"]["id"])
    # Pretend every read of the used set is stale (another process allocated meanwhile): the
    # UNIQUE constraint must still refuse the taken addresses and the allocator move on.
    monkeypatch.setattr(_common, "used_addresses", lambda s, subnet_id: set())
    second = svc.create_port(setup["ctx"], network_id=setup["net"]["id"])
    taken = {first.fixed_ips[0].ip_address, "10.60.0.2"}
    assert second.fixed_ips[0].ip_address not in taken


def test_compute_hosts_get_their_ports_and_tunnels_and_the_network_host_serves_everything(
        api: Api, setup: dict[str, Any]) -> None:
    svc: NetworkService = setup["svc"]
    ctx, net = setup["ctx"], setup["net"]
    ctl = svc.control_host
    (p1,) = svc.allocate_for_instance(ctx, "vm1", "c1", "auto", ["default"], hostname="vm1")
    (p2,) = svc.allocate_for_instance(ctx, "vm2", "c2", "auto", ["default"], hostname="vm2")
    # All-in-one so far: no host reported a tunnel address, so no network has a tunnel.
    assert all(n.tunnel is None for n in svc.host_state(ctl).networks)
    for host, ip in ((ctl, "10.250.0.1"), ("c1", "10.250.0.2"), ("c2", "10.250.0.3")):
        svc.report_tunnel(host, ip)
    c1 = svc.host_state("c1")
    assert not c1.network_host and c1.tunnel_ip == "10.250.0.2"
    assert [p.id for p in c1.ports] == [p1.id] and c1.routers == () and c1.metadata == ()
    (n1,) = c1.networks
    assert n1.id == net["id"] and n1.subnets  # subnets stay: the firewall needs the DHCP addresses
    assert n1.tunnel is not None and n1.tunnel.vni == n1.segmentation_id
    assert n1.tunnel.peers == ("10.250.0.1", "10.250.0.3")
    dhcp_mac = n1.dhcp_mac
    assert dhcp_mac is not None
    assert {(e.mac, e.dst) for e in n1.tunnel.fdb} == {
        ("00:00:00:00:00:00", "10.250.0.1"), ("00:00:00:00:00:00", "10.250.0.3"),
        (p2.mac_address.lower(), "10.250.0.3"), (dhcp_mac.lower(), "10.250.0.1")}
    assert c1.dhcp_ports == ()  # only the network host serves DHCP
    ctl_state = svc.host_state(ctl)
    assert ctl_state.network_host and ctl_state.tunnel_ip == "10.250.0.1"
    assert {m.instance_id for m in ctl_state.metadata} == {"vm1", "vm2"}
    # Its DHCP answers the ports on the other hosts (across the tunnels), which it does not plug.
    assert ctl_state.ports == ()
    assert {(p.id, p.mac_address, p.hostname, p.fixed_ips[0].ip_address) for p in ctl_state.dhcp_ports} == {
        (p.id, p.mac_address, name, p.fixed_ips[0].ip_address) for p, name in ((p1, "vm1"), (p2, "vm2"))}
    tunnel = next(n for n in ctl_state.networks if n.id == net["id"]).tunnel
    assert tunnel is not None and tunnel.peers == ("10.250.0.2", "10.250.0.3")
    # A port goes: the other hosts forget its MAC.
    svc.deallocate_for_instance(ctx, "vm2")
    (n1,) = svc.host_state("c1").networks
    assert n1.tunnel is not None and n1.tunnel.peers == ("10.250.0.1",)
    assert all(e.dst == "10.250.0.1" for e in n1.tunnel.fdb)
    # Withdrawing an address takes the host out of everyone's tunnels; a bad one is refused.
    svc.report_tunnel(ctl, "")
    assert svc.host_state("c1").networks[0].tunnel is None
    with pytest.raises(BadRequest, match="VXLAN runs over IPv4"):
        svc.report_tunnel("c1", "not-an-ip")
