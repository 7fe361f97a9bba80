"""Roles and VXLAN forwarding entries, as pure functions of where the ports are."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from yunstack.network import topology as tp
from yunstack.network.dataplane.fake import FakeDataplane
from yunstack.network.dataplane.linux import LinuxDataplane
from yunstack.network.desired import FLOOD_MAC, FdbEntry, HostNetworkState, NetworkState, SubnetState, TunnelState

NET_A, NET_B = "net-a", "net-b"
TUNNELS = {"ctl": "10.250.0.1", "c1": "10.250.0.2", "c2": "10.250.0.10"}


def place(net: str, mac: str, host: str) -> tp.PortPlace:
    return tp.PortPlace(network_id=net, mac_address=mac, host=host)


PLACES = [place(NET_A, "fa:16:3e:00:00:01", "c1"), place(NET_A, "FA:16:3E:00:00:02", "c2"),
          place(NET_A, "fa:16:3e:00:00:d1", "ctl"),  # the DHCP port
          place(NET_B, "fa:16:3e:00:00:03", "c1")]


def test_the_network_host_has_every_network_and_a_compute_host_only_those_of_its_ports() -> None:
    assert tp.networks_of_host("ctl", "ctl", [NET_A, NET_B, "net-c"], PLACES) == [NET_A, NET_B, "net-c"]
    assert tp.networks_of_host("c1", "ctl", [NET_A, NET_B, "net-c"], PLACES) == [NET_A, NET_B]
    assert tp.networks_of_host("c2", "ctl", [NET_A, NET_B, "net-c"], PLACES) == [NET_A]
    assert tp.networks_of_host("c3", "ctl", [NET_A, NET_B], PLACES) == []


def test_dhcp_and_router_ports_are_on_the_network_host_and_compute_ports_on_their_binding() -> None:
    assert tp.port_host("network:dhcp", "", "ctl") == "ctl"
    assert tp.port_host("network:router_interface", "c1", "ctl") == "ctl"
    assert tp.port_host("compute:nova", "c1", "ctl") == "c1"
    assert tp.port_host("compute:nova", "", "ctl") is None  # a shelved server's port is nowhere
    assert tp.port_host("", "", "ctl") is None
    assert tp.port_host("network:floatingip", "", "ctl") is None


def test_a_compute_host_floods_to_each_other_host_and_knows_where_each_remote_mac_is() -> None:
    hosts = tp.hosts_by_network("ctl", [NET_A, NET_B], PLACES)
    assert hosts == {NET_A: {"ctl", "c1", "c2"}, NET_B: {"ctl", "c1"}}
    got = tp.tunnel("c1", NET_A, 101, hosts[NET_A], TUNNELS, PLACES)
    assert got == TunnelState(vni=101, peers=("10.250.0.1", "10.250.0.10"), fdb=(
        FdbEntry(mac=FLOOD_MAC, dst="10.250.0.1"), FdbEntry(mac=FLOOD_MAC, dst="10.250.0.10"),
        FdbEntry(mac="fa:16:3e:00:00:02", dst="10.250.0.10"),  # lower-cased, as `bridge fdb` shows it
        FdbEntry(mac="fa:16:3e:00:00:d1", dst="10.250.0.1")))
    # The host's own ports never point into the tunnel.
    assert all(e.mac != "fa:16:3e:00:00:01" for e in got.fdb)


def test_the_network_host_reaches_every_compute_host_of_a_network() -> None:
    hosts = tp.hosts_by_network("ctl", [NET_B], PLACES)
    got = tp.tunnel("ctl", NET_B, 102, hosts[NET_B], TUNNELS, PLACES)
    assert got is not None and got.peers == ("10.250.0.2",)
    assert set(got.fdb) == {FdbEntry(mac=FLOOD_MAC, dst="10.250.0.2"),
                            FdbEntry(mac="fa:16:3e:00:00:03", dst="10.250.0.2")}


def test_no_tunnel_on_a_single_host_or_without_tunnel_addresses() -> None:
    alone = [place(NET_A, "fa:16:3e:00:00:01", "ctl")]
    hosts = tp.hosts_by_network("ctl", [NET_A], alone)
    assert tp.tunnel("ctl", NET_A, 1, hosts[NET_A], TUNNELS, alone) is None  # nobody to talk to
    hosts = tp.hosts_by_network("ctl", [NET_A], PLACES)
    assert tp.tunnel("c1", NET_A, 1, hosts[NET_A], {}, PLACES) is None  # all-in-one: no addresses
    assert tp.tunnel("c1", NET_A, 1, hosts[NET_A], {"c1": "10.250.0.2"}, PLACES) is None  # peers unknown
    # A peer that has not reported an address is left out, the others stay.
    partial = {"c1": "10.250.0.2", "ctl": "10.250.0.1"}
    got = tp.tunnel("c1", NET_A, 1, hosts[NET_A], partial, PLACES)
    assert got is not None and got.peers == ("10.250.0.1",)
    assert all(e.dst == "10.250.0.1" for e in got.fdb)


def test_a_deleted_port_drops_its_forwarding_entry() -> None:
    before = tp.tunnel("c1", NET_A, 5, {"ctl", "c1", "c2"}, TUNNELS, PLACES)
    after = tp.tunnel("c1", NET_A, 5, {"ctl", "c1", "c2"}, TUNNELS, [p for p in PLACES if p.host != "c2"])
    assert before is not None and after is not None
    assert set(before.fdb) - set(after.fdb) == {FdbEntry(mac="fa:16:3e:00:00:02", dst="10.250.0.10")}
    # c2 is still a peer while the control plane says it has the network (it may have a DHCP client
    # coming up): its flood entry stays.
    assert FdbEntry(mac=FLOOD_MAC, dst="10.250.0.10") in after.fdb


def test_tenant_mtu_leaves_room_for_vxlan_over_ipv4() -> None:
    assert tp.tenant_mtu(1500) == 1450
    assert tp.tenant_mtu(9000) == 8950


def test_the_fake_dataplane_records_the_forwarding_entries() -> None:
    tunnel = tp.tunnel("c1", NET_A, 7, {"ctl", "c1", "c2"}, TUNNELS, PLACES)
    net = NetworkState(id=NET_A, name="a", mtu=1450, external=False, subnets=(), segmentation_id=7, tunnel=tunnel)
    fake = FakeDataplane()
    asyncio.run(fake.apply(HostNetworkState(host="c1", network_host=False, tunnel_ip="10.250.0.2",
                                            networks=(net,))))
    assert tunnel is not None and fake.fdb(NET_A) == tunnel.fdb and fake.fdb(NET_B) == ()


def test_a_compute_host_wants_bridge_vxlan_and_taps_but_no_dhcp_and_a_lone_host_no_vxlan(tmp_path: Path) -> None:
    subnet = SubnetState(id="s", network_id=NET_A, cidr="10.97.0.0/24", ip_version=4, gateway_ip="10.97.0.1",
                         enable_dhcp=True, dhcp_ip="10.97.0.2")
    tunnel = tp.tunnel("c1", NET_A, 7, {"ctl", "c1", "c2"}, TUNNELS, PLACES)
    net = NetworkState(id=NET_A, name="a", mtu=1450, external=False, subnets=(subnet,), segmentation_id=7,
                       tunnel=tunnel)
    dp = LinuxDataplane(tmp_path, metadata_upstream="http://127.0.0.1:9/metadata", tag="zz")
    names = dp.names
    compute = HostNetworkState(host="c1", network_host=False, tunnel_ip="10.250.0.2", networks=(net,))
    links, spaces, _dirs = dp._desired(compute)
    assert links == {names.bridge(NET_A), names.vxlan(NET_A)} and spaces == set()
    serving = replace(compute, network_host=True)
    links, spaces, _dirs = dp._desired(serving)
    assert names.dhcp_veth(NET_A) in links and spaces == {names.dhcp_ns(NET_A)}
    # Without a tunnel address of its own (all-in-one), the host has no VXLAN device at all.
    links, _spaces, _dirs = dp._desired(replace(serving, tunnel_ip=""))
    assert names.vxlan(NET_A) not in links
