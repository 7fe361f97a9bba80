"""The dataplane's pure parts for IPv6 and for tenant isolation: one bad port never costs the others."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from yunstack.network.dataplane import dhcp, firewall
from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import (
    FixedIp,
    HostNetworkState,
    NetworkState,
    PortState,
    SecurityGroupRule,
    SecurityGroupState,
    SubnetState,
)

NET = "0f1e2d3c-4b5a-4697-8876-5a4b3c2d1e0f"
V4 = "5a4b3c2d-1e0f-4a1b-9c2d-3e4f5a6b7c8d"
V6 = "6b5c4d3e-2f10-4b2c-8d3e-4f5a6b7c8d9e"
GOOD = "9a8b7c6d-5e4f-4a3b-8c1d-0e9f8a7b6c5d"
BAD = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
NAMES = Names("ab")

PING6_IN = SecurityGroupRule(id="icmp6", direction="ingress", ethertype="IPv6", protocol="ipv6-icmp")
ANY6_OUT = SecurityGroupRule(id="out6", direction="egress", ethertype="IPv6", protocol=None)
SSH_IN = SecurityGroupRule(id="ssh", direction="ingress", ethertype="IPv4", protocol="tcp", port_range_min=22,
                           port_range_max=22)


def _net(mode: str = "slaac", *, v6_dhcp: bool = True) -> NetworkState:
    v4 = SubnetState(id=V4, network_id=NET, cidr="10.97.0.0/24", ip_version=4, gateway_ip="10.97.0.1",
                     enable_dhcp=True, dhcp_ip="10.97.0.2")
    v6 = SubnetState(id=V6, network_id=NET, cidr="fd00:97::/64", ip_version=6, gateway_ip="fd00:97::1",
                     enable_dhcp=v6_dhcp, dhcp_ip="fd00:97::2", ipv6_ra_mode=mode, ipv6_address_mode=mode)
    return NetworkState(id=NET, name="n", mtu=1450, external=False, subnets=(v4, v6), segmentation_id=7,
                        dhcp_mac="fa:16:3e:00:00:02")


def _port(port_id: str, mac: str, octet: int, **kw: object) -> PortState:
    return PortState(id=port_id, network_id=NET, mac_address=mac,
                     fixed_ips=(FixedIp(subnet_id=V4, ip_address=f"10.97.0.{octet}"),
                                FixedIp(subnet_id=V6, ip_address=f"fd00:97::{octet:x}")),
                     device_id="vm", device_owner="compute:nova", hostname=f"vm{octet}", tap="x",
                     security_group_ids=("sg",), **kw)  # type: ignore[arg-type]


def _state(*ports: PortState, mode: str = "slaac", rules: tuple[SecurityGroupRule, ...] = (PING6_IN, ANY6_OUT)
           ) -> HostNetworkState:
    return HostNetworkState(host="h", networks=(_net(mode),), ports=ports,
                            security_groups=(SecurityGroupState(id="sg", rules=(SSH_IN, *rules)),))


def test_the_slaac_and_link_local_addresses_are_the_eui64_of_the_mac() -> None:
    assert firewall.link_local("fa:16:3e:00:00:05") == "fe80::f816:3eff:fe00:5"
    assert firewall.eui64("fd00:97::/64", "FA:16:3E:00:00:05".lower()) == "fd00:97::f816:3eff:fe00:5"


def test_an_ipv6_port_gets_conntrack_chains_with_neighbour_discovery_ras_and_its_icmpv6_rule() -> None:
    text = firewall.render_filter(NAMES, _state(_port(GOOD, "fa:16:3e:00:00:05", 5)), family=6)
    ingress, egress, spoof = NAMES.port_chains(GOOD)
    icmp6 = "-p ipv6-icmp -m icmp6 --icmpv6-type"
    # Neighbour discovery passes before conntrack, RAs only from the DHCP namespace's link-local address.
    assert f"-A {ingress} {icmp6} 135 -j RETURN" in text and f"-A {ingress} {icmp6} 136 -j RETURN" in text
    assert f"-A {ingress} -s fe80::f816:3eff:fe00:2/128 {icmp6} 134 -j RETURN" in text
    assert text.index(f"-A {ingress} {icmp6} 135") < text.index(f"-A {ingress} -m conntrack")
    # The guest never sends RAs or DHCPv6 replies; its DAD from :: passes.
    assert f"-A {egress} {icmp6} 134 -j DROP" in text
    assert f"-A {egress} -p udp -m udp --sport 547 --dport 546 -j DROP" in text
    assert f"-A {egress} -s ::/128 -d ff02::/16 {icmp6} 135 -j RETURN" in text
    # Anti-spoofing: its fixed IPv6, its SLAAC and link-local addresses, each with its MAC.
    for source in ("fd00:97::5/128", "fd00:97::f816:3eff:fe00:5/128", "fe80::f816:3eff:fe00:5/128"):
        assert f"-A {spoof} -s {source} -m mac --mac-source fa:16:3e:00:00:05 -j RETURN" in text
    # The group's ICMPv6 rule, and no IPv4 rule in the IPv6 table.
    assert f"-A {ingress} -p ipv6-icmp -j RETURN" in text and "--dport 22" not in text
    assert f"-A {ingress} -j DROP" in text and f"-A {egress} -j DROP" in text


def test_without_an_icmpv6_rule_echo_requests_reach_only_the_final_drop() -> None:
    text = firewall.render_filter(NAMES, _state(_port(GOOD, "fa:16:3e:00:00:05", 5), rules=(ANY6_OUT,)),
                                  family=6)
    ingress, _, _ = NAMES.port_chains(GOOD)
    assert f"-A {ingress} -p ipv6-icmp -j RETURN" not in text
    assert "--icmpv6-type 128" not in text  # echo request is not among what always passes


def test_the_bridge_table_no_longer_drops_ipv6() -> None:
    table = firewall.render_bridge_table(NAMES, _state(_port(GOOD, "fa:16:3e:00:00:05", 5)))
    assert "ip6" not in table


def test_a_port_with_a_bad_mac_is_quarantined_and_every_other_port_keeps_its_rules() -> None:
    good = _port(GOOD, "fa:16:3e:00:00:05", 5)
    bad = _port(BAD, "fa:16:3e:00:00:06", 6, allowed_address_pairs=(("10.97.0.50", "x"),))
    state = _state(good, bad)
    assert firewall.problems(state) == {BAD: "bad allowed address pair MAC 'x'"}
    for family in (4, 6):
        text = firewall.render_filter(NAMES, state, family=family)
        assert "--mac-source x" not in text
        for chain in NAMES.port_chains(BAD):
            assert [line for line in text.splitlines() if line.startswith(f"-A {chain} ")] == [f"-A {chain} -j DROP"]
        ingress, _, spoof = NAMES.port_chains(GOOD)
        source = "10.97.0.5/32" if family == 4 else "fd00:97::5/128"
        assert f"-A {spoof} -s {source} -m mac --mac-source fa:16:3e:00:00:05 -j RETURN" in text
        assert any(line.startswith(f"-A {ingress} -m conntrack") for line in text.splitlines())
    table = firewall.render_bridge_table(NAMES, state)
    assert f'oifname "{NAMES.tap(BAD)}" drop' in table and " x" not in table
    assert "fa:16:3e:00:00:05" in table


@pytest.mark.parametrize("bad", [
    {"mac_address": "x"},
    {"fixed_ips": (FixedIp(subnet_id=V4, ip_address="10.97.0.999"),)},
    {"allowed_address_pairs": (("not-an-ip", None),)},
])
def test_every_kind_of_bad_port_value_is_named(bad: dict[str, object]) -> None:
    port = replace(_port(BAD, "fa:16:3e:00:00:06", 6), **bad)  # type: ignore[arg-type]
    assert firewall.port_problem(port) is not None
    # Rendering never raises: the port is quarantined.
    firewall.render_filter(NAMES, _state(port), family=4)
    firewall.render_bridge_table(NAMES, _state(port))


def test_a_rule_with_a_bad_prefix_allows_nothing_and_the_rest_of_its_group_applies() -> None:
    broken = SecurityGroupRule(id="broken", direction="ingress", ethertype="IPv4", protocol="tcp",
                               remote_ip_prefix="10.0.0.0/99")
    state = _state(_port(GOOD, "fa:16:3e:00:00:05", 5), rules=(broken,))
    text = firewall.render_filter(NAMES, state, family=4)
    ingress, _, _ = NAMES.port_chains(GOOD)
    assert f"-A {ingress} -p tcp -m tcp --dport 22 -j RETURN" in text
    assert "10.0.0.0/99" not in text


@pytest.mark.parametrize(("mode", "expected"), [
    ("slaac", "--dhcp-range=set:s1,fd00:97::,ra-only,64,86400s"),
    ("dhcpv6-stateless", "--dhcp-range=set:s1,fd00:97::,ra-stateless,64,86400s"),
    ("dhcpv6-stateful", "--dhcp-range=set:s1,fd00:97::,static,64,86400s"),
])
def test_dnsmasq_advertises_or_leases_ipv6_after_the_subnet_modes(tmp_path: Path, mode: str, expected: str) -> None:
    state = _state(_port(GOOD, "fa:16:3e:00:00:05", 5), mode=mode)
    config = dhcp.render(state.networks[0], state, tmp_path, "example.test")
    assert expected in config.argv and "--enable-ra" in config.argv
    assert "fd00:97::2/64" in config.addresses
    hosts = config.files["host"].splitlines()
    assert ("fa:16:3e:00:00:05,[fd00:97::5],vm5" in hosts) == (mode == "dhcpv6-stateful")


def test_a_port_with_a_bad_mac_gets_no_lease_and_the_others_keep_theirs(tmp_path: Path) -> None:
    state = _state(_port(GOOD, "fa:16:3e:00:00:05", 5), _port(BAD, "x", 6))
    config = dhcp.render(state.networks[0], state, tmp_path, "example.test")
    assert config.files["host"].splitlines() == ["fa:16:3e:00:00:05,10.97.0.5,vm5"]


def test_the_rendered_rules_load_in_real_iptables_and_nft() -> None:
    """iptables-restore --test and nft -c accept what we render (skipped without the tools)."""
    state = _state(_port(GOOD, "fa:16:3e:00:00:05", 5), _port(BAD, "x", 6))
    for tool, text in (("iptables-restore", firewall.render_filter(NAMES, state, family=4)),
                       ("ip6tables-restore", firewall.render_filter(NAMES, state, family=6))):
        try:
            done = subprocess.run([tool, "-w", "--test", "--noflush"], input=text, capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip(f"{tool} is not installed")
        if "Permission denied" in done.stderr:
            pytest.skip("needs root")
        assert done.returncode == 0, done.stderr
    try:
        done = subprocess.run(["nft", "-c", "-f", "-"], input=firewall.render_bridge_table(NAMES, state),
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("nft is not installed")
    assert done.returncode == 0, done.stderr


def test_one_network_that_fails_is_reported_and_every_other_object_is_still_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yunstack.errors import DriverError
    from yunstack.network.dataplane import bridges
    from yunstack.network.dataplane.linux import LinuxDataplane

    broken = replace(_net(), id="broken-net", dhcp_mac="x")
    state = replace(_state(_port(GOOD, "fa:16:3e:00:00:05", 5)), networks=(broken, _net()))
    dp = LinuxDataplane(tmp_path, metadata_upstream="http://127.0.0.1:9/metadata", tag="zz")
    applied: list[str] = []

    def ensure_dhcp(net: NetworkState, *_: object) -> None:
        if net.dhcp_mac == "x":
            raise DriverError(detail="ip link set dev ysdhcp address x failed")
        applied.append(f"dhcp {net.id}")

    monkeypatch.setattr(bridges, "links", lambda netns=None: {})
    monkeypatch.setattr(bridges, "namespaces", lambda: set())
    monkeypatch.setattr(dp, "_prepare_host", lambda: None)
    monkeypatch.setattr(dp, "_ensure_network", lambda net, *_: applied.append(f"network {net.id}"))
    monkeypatch.setattr(dp, "_ensure_tap", lambda port_id, *_: applied.append(f"port {port_id}"))
    monkeypatch.setattr(dp, "_ensure_dhcp", ensure_dhcp)
    monkeypatch.setattr(dp, "_ensure_firewall", lambda *_: applied.append("firewall"))
    monkeypatch.setattr(dp, "_remove_strays", lambda *_: None)
    report = asyncio.run(dp.apply(state))
    assert len(report.failed) == 1 and report.failed[0].startswith("dhcp of network broken-net: ")
    assert "ip link set dev ysdhcp address x failed" in report.failed[0]
    assert applied == ["network broken-net", f"network {NET}", f"port {GOOD}", f"dhcp {NET}", "firewall"]
    assert dp.nic_for_port(GOOD).tap == dp.names.tap(GOOD)  # the host can still spawn its VMs


def test_a_subnet_without_an_ra_mode_gets_no_ra_from_us(tmp_path: Path) -> None:
    state = _state(_port(GOOD, "fa:16:3e:00:00:05", 5))
    v4, v6 = state.networks[0].subnets
    outside = replace(state.networks[0], subnets=(v4, replace(v6, ipv6_ra_mode=None)))
    config = dhcp.render(outside, replace(state, networks=(outside,)), tmp_path, "example.test")
    assert "--enable-ra" not in config.argv and not any("fd00:97::" in a for a in config.argv)
    stateful = replace(outside, subnets=(v4, replace(v6, ipv6_ra_mode=None, ipv6_address_mode="dhcpv6-stateful")))
    config = dhcp.render(stateful, replace(state, networks=(stateful,)), tmp_path, "example.test")
    assert "--enable-ra" not in config.argv and "--dhcp-range=set:s1,fd00:97::,static,64,86400s" in config.argv
