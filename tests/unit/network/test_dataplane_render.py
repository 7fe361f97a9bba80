"""The dataplane's pure parts: names, security group rules, dnsmasq config, NAT, metadata documents."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from yunstack.agent.netreconcile import NetworkReconciler
from yunstack.api.metadata import make_metadata_router
from yunstack.compute.driver import Ipv4Config
from yunstack.errors import NotFound
from yunstack.network.dataplane import dhcp, firewall, routers
from yunstack.network.dataplane.fake import FakeDataplane
from yunstack.network.dataplane.metadata_api import (
    ADDRESS_HEADER,
    NETWORK_HEADER,
    SIGNATURE_HEADER,
    InstanceMetadata,
    ensure_secret,
    respond,
    sign,
    verify,
)
from yunstack.network.dataplane.naming import IFNAMSIZ, Names, install_tag
from yunstack.network.desired import (
    FixedIp,
    FloatingIpState,
    HostNetworkState,
    NetworkState,
    PortState,
    RouterInterface,
    RouterState,
    SecurityGroupRule,
    SecurityGroupState,
    SubnetState,
)

NET = "0f1e2d3c-4b5a-4697-8876-5a4b3c2d1e0f"
SUBNET = "5a4b3c2d-1e0f-4a1b-9c2d-3e4f5a6b7c8d"
PORT = "9a8b7c6d-5e4f-4a3b-8c1d-0e9f8a7b6c5d"
OTHER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def _state(*, routed: bool = False) -> HostNetworkState:
    subnet = SubnetState(id=SUBNET, network_id=NET, cidr="10.97.0.0/24", ip_version=4, gateway_ip="10.97.0.1",
                         enable_dhcp=True, dhcp_ip="10.97.0.2")
    net = NetworkState(id=NET, name="n", mtu=1450, external=False, subnets=(subnet,), segmentation_id=7)
    rule_in = SecurityGroupRule(id="r1", direction="ingress", ethertype="IPv4", protocol="tcp",
                                port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.0/8")
    rule_grp = SecurityGroupRule(id="r2", direction="ingress", ethertype="IPv4", protocol="icmp",
                                 remote_group_id="sg")
    rule_v6 = SecurityGroupRule(id="r3", direction="egress", ethertype="IPv6", protocol=None)
    sg = SecurityGroupState(id="sg", rules=(rule_in, rule_grp, rule_v6), member_ips=("10.97.0.5", "10.97.0.6"))
    secured = PortState(id=PORT, network_id=NET, mac_address="FA:16:3E:00:00:05",
                        fixed_ips=(FixedIp(subnet_id=SUBNET, ip_address="10.97.0.5"),), device_id="vm",
                        device_owner="compute:nova", hostname="web-1.example", tap="x", security_group_ids=("sg",),
                        allowed_address_pairs=(("10.97.0.100/32", None),))
    open_port = PortState(id=OTHER, network_id=NET, mac_address="fa:16:3e:00:00:06",
                          fixed_ips=(FixedIp(subnet_id=SUBNET, ip_address="10.97.0.6"),), device_id="vm2",
                          device_owner="compute:nova", hostname="", tap="y", port_security_enabled=False)
    routers_ = ()
    if routed:
        routers_ = (RouterState(
            id="r", gateway_network_id="ext", gateway_ip="172.24.4.10", gateway_prefixlen=24, gateway_mac=None,
            enable_snat=True,
            interfaces=(RouterInterface(port_id="rp", subnet_id=SUBNET, network_id=NET, ip_address="10.97.0.1",
                                        prefixlen=24, mac_address="fa:16:3e:00:00:01"),),
            floating_ips=(FloatingIpState(id="f", floating_ip_address="172.24.4.20",
                                          fixed_ip_address="10.97.0.5", port_id=PORT),)),)
    return HostNetworkState(host="h", networks=(net,), ports=(secured, open_port), security_groups=(sg,),
                            routers=routers_)


def test_every_interface_name_fits_ifnamsiz_and_carries_the_installation_tag(tmp_path: Path) -> None:
    tag = install_tag(tmp_path)
    names = Names(tag)
    for make in (names.bridge, names.tap, names.dhcp_veth, names.router_veth, names.gateway_veth, names.vxlan):
        name = make(NET)
        assert len(name) == IFNAMSIZ and name.startswith(f"ys{tag}")
    assert install_tag(tmp_path) == tag  # stable for one state dir
    assert all(len(c) <= 28 for c in names.port_chains(PORT))


def test_a_secured_port_gets_stateful_chains_with_anti_spoofing_and_its_rules() -> None:
    names = Names("ab")
    text = firewall.render_filter(names, _state())
    ingress, egress, spoof = names.port_chains(PORT)
    assert f"-A {ingress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN" in text
    assert f"-A {ingress} -p tcp -m tcp --dport 22 -s 10.0.0.0/8 -j RETURN" in text
    assert f"-A {ingress} -p icmp -s 10.97.0.6/32 -j RETURN" in text  # remote group, expanded
    assert f"-A {spoof} -s 10.97.0.5/32 -m mac --mac-source fa:16:3e:00:00:05 -j RETURN" in text
    assert f"-A {spoof} -s 10.97.0.100/32 -m mac --mac-source fa:16:3e:00:00:05 -j RETURN" in text
    assert f"-A {egress} -j DROP" in text and f"-A {ingress} -j DROP" in text
    assert text.count(f"-A {egress} ") == 6  # no IPv6 rule rendered in the IPv4 table
    # The unsecured port gets no chain at all.
    assert names.tap(OTHER) not in text


def test_obsolete_chains_are_flushed_then_deleted() -> None:
    names = Names("ab")
    text = firewall.render_filter(names, _state(), obsolete=["ys-ab-iold"])
    assert ":ys-ab-iold - [0:0]" in text and "-A ys-ab-iold" not in text
    assert firewall.render_delete(["ys-ab-iold"]) == "*filter\n-X ys-ab-iold\nCOMMIT\n"


def test_dnsmasq_serves_static_leases_names_and_the_isolated_metadata_route(tmp_path: Path) -> None:
    state = _state()
    config = dhcp.render(state.networks[0], state, tmp_path, "example.test")
    assert "--dhcp-range=set:s0,10.97.0.0,static,255.255.255.0,86400s" in config.argv
    assert sorted(config.files["host"].splitlines()) == ["fa:16:3e:00:00:05,10.97.0.5,web-1",
                                                         "fa:16:3e:00:00:06,10.97.0.6,host-10-97-0-6"]
    assert "10.97.0.5\tweb-1.example.test web-1" in config.files["addn_hosts"]
    assert ("tag:s0,option:classless-static-route,169.254.169.254/32,10.97.0.2,0.0.0.0/0,10.97.0.1"
            in config.files["opts"])
    assert config.isolated_cidrs == ("10.97.0.0/24",)
    routed = _state(routed=True)
    config = dhcp.render(routed.networks[0], routed, tmp_path, "example.test")
    assert "classless-static-route" not in config.files["opts"] and not config.isolated_cidrs


def test_the_network_hosts_dnsmasq_also_leases_to_ports_on_other_hosts(tmp_path: Path) -> None:
    state = _state()
    remote = replace(state, ports=state.ports[:1], dhcp_ports=state.ports[1:])
    config = dhcp.render(remote.networks[0], remote, tmp_path, "example.test")
    assert sorted(config.files["host"].splitlines()) == ["fa:16:3e:00:00:05,10.97.0.5,web-1",
                                                         "fa:16:3e:00:00:06,10.97.0.6,host-10-97-0-6"]


def test_a_router_nats_floating_ips_both_ways_and_snats_its_subnets() -> None:
    nat = routers.render_nat(_state(routed=True).routers[0])
    assert "-A PREROUTING -d 172.24.4.20/32 -j DNAT --to-destination 10.97.0.5" in nat
    assert "-A POSTROUTING -s 10.97.0.5/32 -o ysqgr -j SNAT --to-source 172.24.4.20" in nat
    assert "-A POSTROUTING -s 10.97.0.0/24 -o ysqgr -j SNAT --to-source 172.24.4.10" in nat


MD = InstanceMetadata(uuid="u-1", name="vm", hostname="vm.example", public_keys={"k": "ssh-ed25519 AAA k"},
                      user_data=b"#!/bin/sh\n", local_ipv4="10.97.0.5")


@pytest.mark.parametrize("path,expected", [
    ("/openstack/latest/meta_data.json", b'"uuid": "u-1"'),
    ("/openstack/2018-08-27/user_data", b"#!/bin/sh"),
    ("/latest/meta-data/instance-id", b"u-1"),
    ("/latest/meta-data/local-ipv4", b"10.97.0.5"),
    ("/latest/meta-data/public-keys/", b"0=k"),
    ("/latest/meta-data/public-keys/0/openssh-key", b"ssh-ed25519 AAA k"),
    ("/2009-04-04/user-data", b"#!/bin/sh"),
])
def test_the_metadata_documents(path: str, expected: bytes) -> None:
    answer = respond(path, MD)
    assert answer.status == 200 and expected in answer.body


def test_the_metadata_router_answers_only_signed_requests_for_the_owner(tmp_path: Path) -> None:
    secret = ensure_secret(tmp_path / "secret")
    assert ensure_secret(tmp_path / "secret") == secret
    app = FastAPI()
    app.include_router(make_metadata_router(lambda net, ip: MD if (net, ip) == ("n1", "10.97.0.5") else None,
                                            secret))
    client = TestClient(app)

    def get(net: str, ip: str, signature: str) -> int:
        headers = {NETWORK_HEADER: net, ADDRESS_HEADER: ip, SIGNATURE_HEADER: signature}
        return client.get("/metadata/latest/meta-data/instance-id", headers=headers).status_code

    assert get("n1", "10.97.0.5", sign(secret, "n1", "10.97.0.5")) == 200
    assert get("n1", "10.97.0.5", sign(b"wrong", "n1", "10.97.0.5")) == 403
    assert get("n1", "10.97.0.6", sign(secret, "n1", "10.97.0.5")) == 403  # a signature is per address
    assert get("n1", "10.97.0.6", sign(secret, "n1", "10.97.0.6")) == 404
    assert not verify(secret, "", "", "")


async def test_the_reconciler_applies_the_fetched_state_and_the_fake_records_it() -> None:
    dp = FakeDataplane()
    state = _state()
    reconciler = NetworkReconciler(dp, lambda: state, period=0.01)
    report = await reconciler.reconcile_now()
    assert report.created and dp.state is state
    assert dp.nic_for_port(PORT).mac == "fa:16:3e:00:00:05" and dp.nic_for_port(PORT).tap == dp.names.tap(PORT)
    # What the port's lease carries, which a memory template's clone sets before its lease comes.
    assert dp.nic_for_port(PORT).ipv4 == Ipv4Config(address="10.97.0.5/24", gateway="10.97.0.1", dns=("10.97.0.2",),
                                                    domain="openstacklocal", mtu=1450)
    with pytest.raises(NotFound):
        dp.nic_for_port("nope")
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await task
    assert len(dp.applied) >= 2


async def test_notices_start_a_pass_soon_and_a_burst_of_them_few_passes() -> None:
    dp = FakeDataplane()
    state = _state()
    reconciler = NetworkReconciler(dp, lambda: state, period=3600.0, kick_gap=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))

    async def passes(n: int) -> None:
        while len(dp.applied) < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(passes(1), 10)  # the first pass, at start
    reconciler.kick()
    await asyncio.wait_for(passes(2), 10)  # a notice: a pass, not the hour's period
    started, before = time.monotonic(), len(dp.applied)
    for _ in range(50):  # a burst of notices over about half a second
        reconciler.kick()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(passes(before + 1), 10)  # the burst's changes are applied...
    elapsed = time.monotonic() - started
    # ...by a pass per gap at most (fewer when the machine is slow), never one per notice
    assert len(dp.applied) - before <= 2 + elapsed / 0.2, (len(dp.applied) - before, elapsed)
    stop.set()
    await task


def test_a_lease_of_a_deleted_port_is_stale_and_goes_so_its_address_can_be_leased_again(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.write_text("1800000000 fa:16:3e:00:00:01 10.0.0.3 old *\n"
                      "1800000000 fa:16:3e:00:00:02 10.0.0.4 kept *\n"
                      "duid 00:01:00:01:aa:bb\n")
    hosts = "fa:16:3e:00:00:09,10.0.0.3,new\nfa:16:3e:00:00:02,10.0.0.4,kept\n"
    assert dhcp._stale_leases(leases, hosts)
    dhcp._drop_stale_leases(leases, hosts)
    assert leases.read_text() == "1800000000 fa:16:3e:00:00:02 10.0.0.4 kept *\nduid 00:01:00:01:aa:bb\n"
    assert not dhcp._stale_leases(leases, hosts)
    assert not dhcp._stale_leases(tmp_path / "none", hosts)


def test_a_ports_lease_is_known_only_on_an_ipv4_subnet_with_dhcp() -> None:
    state = _state()
    (net,) = state.networks
    port = state.ports[0]
    lease = dhcp.port_ipv4(state, port, "example.org")
    assert lease == Ipv4Config(address="10.97.0.5/24", gateway="10.97.0.1", dns=("10.97.0.2",), domain="example.org",
                               mtu=1450)
    # The same servers as the rendered option: the subnet's own, else dnsmasq itself.
    assert "tag:s0,option:dns-server,10.97.0.2" in dhcp.render(net, state, Path("/w"), "example.org").files["opts"]
    no_dhcp = replace(net, subnets=(replace(net.subnets[0], enable_dhcp=False, gateway_ip=None),))
    assert dhcp.port_ipv4(replace(state, networks=(no_dhcp,)), port, "d") is None
    v6 = SubnetState(id="s6", network_id=NET, cidr="fd00::/64", ip_version=6, gateway_ip=None, enable_dhcp=True)
    only_v6 = replace(port, fixed_ips=(FixedIp(subnet_id="s6", ip_address="fd00::5"),))
    assert dhcp.port_ipv4(replace(state, networks=(replace(net, subnets=(*net.subnets, v6)),)), only_v6, "d") is None
    own = replace(net, subnets=(replace(net.subnets[0], gateway_ip=None, dns_nameservers=("9.9.9.9", "1.1.1.1")),))
    assert dhcp.port_ipv4(replace(state, networks=(own,)), port, "d") == Ipv4Config(
        address="10.97.0.5/24", gateway=None, dns=("9.9.9.9", "1.1.1.1"), domain="d", mtu=1450)
