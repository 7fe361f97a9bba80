"""One tenant network across two hosts over VXLAN, on the lab underlay.

Two lab hosts (network namespaces on a private 10.250.77.0/24 underlay, ``yunstack.lab.underlay``)
each run the real Linux dataplane (``lab_apply`` inside their namespace) with the state the real
network service computes for them.  A guest on each host (a veth in a further namespace with the
port's MAC and address, standing in for QEMU) pings the other across the VXLAN tunnel; the MTU is
1450 end to end; each host's VXLAN device carries exactly the forwarding entries the control plane
sent; deleting a port removes its entry on the other host.  Nothing is left behind.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, make_config, need
from yunstack.api.app import CATALOG
from yunstack.lab.underlay import LabHost, Underlay
from yunstack.network.dataplane import bridges
from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import FLOOD_MAC, HostNetworkState
from yunstack.wiring import Services, build

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAB_CIDR = "10.250.77.0/24"
TAGS = {"h1": "w1", "h2": "w2"}  # each lab host is its own installation (own state dir and tag)


@dataclass
class Lab:
    underlay: Underlay
    hosts: dict[str, LabHost]
    state_dirs: dict[str, Path]
    guests: list[str]


def _run(argv: list[str], *, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=input, capture_output=True, check=check, timeout=60)


def apply(lab: Lab, name: str, state: HostNetworkState | None) -> dict[str, Any]:
    """Run the host's dataplane in its namespace on ``state`` (None: teardown)."""
    host = lab.hosts[name]
    done = subprocess.run(host.argv(sys.executable, "-m", "tests.integration.lab_apply", str(lab.state_dirs[name]),
                                    TAGS[name]), input=pickle.dumps(state), capture_output=True, cwd=REPO,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout)
    assert not report.get("failed"), report
    return report


def fdb(host: LabHost, dev: str) -> set[tuple[str, str]]:
    out = _run(host.argv("bridge", "-json", "fdb", "show", "dev", dev)).stdout
    return {(e["mac"], e["dst"]) for e in json.loads(out or b"[]") if e.get("dst")}


def links(host: LabHost) -> dict[str, Any]:
    return {i["ifname"]: i for i in json.loads(_run(host.argv("ip", "-d", "-json", "link", "show")).stdout)}


def add_guest(lab: Lab, name: str, index: int, bridge: str, mac: str, ip: str, mtu: int) -> str:
    """A stand-in guest: netns ysx-vt-g<i> whose eth0 (the port's MAC and address) is a veth into ``bridge``."""
    host, ns, veth = lab.hosts[name], f"ysx-vt-g{index}", f"ysxvtg{index}"
    lab.guests.append(ns)
    _run(["ip", "netns", "add", ns])
    _run(host.argv("ip", "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", ns))
    _run(host.argv("ip", "link", "set", "dev", veth, "mtu", str(mtu), "master", bridge, "up"))
    for argv in (["ip", "link", "set", "dev", "lo", "up"],
                 ["ip", "link", "set", "dev", "eth0", "address", mac, "mtu", str(mtu), "up"],
                 ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"]):
        _run(["ip", "netns", "exec", ns, *argv])
    return ns


def ping(ns: str, ip: str, *extra: str) -> bool:
    done = _run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "2", *extra, ip], check=False)
    return done.returncode == 0


def wait_ping(ns: str, ip: str, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ping(ns, ip):
            return time.monotonic() - started
    raise AssertionError(f"{ns} never reached {ip}")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'test.db'}", compute={"driver": "fake", "host": "ctl"})
    svc = build(config)
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    need(os.geteuid() == 0, "root (network namespaces, bridges, VXLAN)")
    need(all(shutil.which(t) for t in ("ip", "bridge", "iptables", "nft", "ping")), "iproute2, iptables, nft, ping")
    underlay = Underlay("vt", LAB_CIDR)
    hosts = {h.name: h for h in underlay.create(2)}
    lab = Lab(underlay=underlay, hosts=hosts, state_dirs={n: tmp_path / n for n in hosts}, guests=[])
    try:
        yield lab
    finally:
        for ns in lab.guests:
            _run(["ip", "netns", "del", ns], check=False)
        alive = underlay.namespaces()
        for name, host in hosts.items():
            if host.netns in alive:
                apply(lab, name, None)
        underlay.remove()


def test_two_hosts_share_a_tenant_network_over_vxlan_with_unicast_forwarding_entries(
        services: Services, lab: Lab) -> None:
    api = Api(services)
    token = api.admin()
    ctx = services.auth.validate(token)
    h = api.headers(token)
    net = api.http.post("/networking/v2.0/networks", headers=h,
                        json={"network": {"name": "vx", "port_security_enabled": False}}).json()["network"]
    assert net["provider:network_type"] == "vxlan" and net["mtu"] == 1450
    vni = net["provider:segmentation_id"]
    api.http.post("/networking/v2.0/subnets", headers=h, json={"subnet": {
        "network_id": net["id"], "cidr": "10.97.77.0/24", "ip_version": 4, "enable_dhcp": False}}).raise_for_status()
    network = services.network
    h1, h2 = lab.hosts["h1"], lab.hosts["h2"]
    # What a fresh namespace has (lo, eth0, and the fallback devices of loaded tunnel modules).
    baseline = {name: set(links(host)) for name, host in lab.hosts.items()}
    network.report_tunnel("h1", h1.ip)
    network.report_tunnel("h2", h2.ip)
    (p1,) = network.allocate_for_instance(ctx, "vm1", "h1", [{"uuid": net["id"]}], [])
    (p2,) = network.allocate_for_instance(ctx, "vm2", "h2", [{"uuid": net["id"]}], [])
    (p3,) = network.allocate_for_instance(ctx, "vm3", "h2", [{"uuid": net["id"]}], [])

    s1, s2 = network.host_state("h1"), network.host_state("h2")
    assert not s1.network_host and s1.tunnel_ip == h1.ip and s1.routers == () and s1.metadata == ()
    (n1,) = s1.networks
    assert n1.tunnel is not None and n1.tunnel.vni == vni and n1.tunnel.peers == (h2.ip,)
    apply(lab, "h1", s1)
    apply(lab, "h2", s2)

    names1, names2 = Names(TAGS["h1"]), Names(TAGS["h2"])
    dev1, dev2 = names1.vxlan(net["id"]), names2.vxlan(net["id"])
    vx = links(h1)[dev1]
    info = vx["linkinfo"]["info_data"]
    assert (info["id"], info["local"], info["port"], info["learning"]) == (vni, h1.ip, 4789, False)
    assert vx["master"] == names1.bridge(net["id"]) and vx["mtu"] == 1450
    assert fdb(h1, dev1) == {(FLOOD_MAC, h2.ip), (p2.mac_address, h2.ip), (p3.mac_address, h2.ip)}
    assert fdb(h2, dev2) == {(FLOOD_MAC, h1.ip), (p1.mac_address, h1.ip)}

    g1 = add_guest(lab, "h1", 1, names1.bridge(net["id"]), p1.mac_address, p1.fixed_ips[0].ip_address, 1450)
    g2 = add_guest(lab, "h2", 2, names2.bridge(net["id"]), p2.mac_address, p2.fixed_ips[0].ip_address, 1450)
    ip2 = p2.fixed_ips[0].ip_address
    first = wait_ping(g1, ip2)
    assert ping(g2, p1.fixed_ips[0].ip_address)
    # MTU: a 1450-byte packet that may not be fragmented crosses (1422 + 8 ICMP + 20 IP) ...
    assert ping(g1, ip2, "-M", "do", "-s", "1422")
    # ... and 1451 bytes do not, even when the guest's own link would take them: the tunnel drops them.
    _run(["ip", "netns", "exec", g1, "ip", "link", "set", "dev", "eth0", "mtu", "1500"])
    _run(h1.argv("ip", "link", "set", "dev", "ysxvtg1", "mtu", "1500"))
    assert not ping(g1, ip2, "-M", "do", "-s", "1423")
    assert ping(g1, ip2, "-M", "do", "-s", "1422")
    print(f"\nfirst ping across VXLAN after {first:.2f}s; 1450 bytes DF pass, 1451 do not")

    # The port vm3 goes: h1 forgets its MAC, the flood entry to h2 and everything else stays.
    network.deallocate_for_instance(ctx, "vm3")
    report = apply(lab, "h1", network.host_state("h1"))
    assert f"vxlan:{dev1} (fdb)" in report["changed"]
    assert fdb(h1, dev1) == {(FLOOD_MAC, h2.ip), (p2.mac_address, h2.ip)}
    apply(lab, "h2", network.host_state("h2"))
    assert names2.tap(p3.id) not in links(h2)
    assert ping(g1, ip2)

    # Everything goes: once no host shares the network, no VXLAN device, bridge or entry is left.
    for ns in lab.guests:
        _run(["ip", "netns", "del", ns])
    lab.guests.clear()
    network.deallocate_for_instance(ctx, "vm1")
    network.deallocate_for_instance(ctx, "vm2")
    for name in ("h1", "h2"):
        state = network.host_state(name)
        assert state.networks == () and state.ports == ()
        apply(lab, name, state)
        assert set(links(lab.hosts[name])) == baseline[name]
        apply(lab, name, None)
    lab.underlay.remove()
    assert lab.underlay.namespaces() == set() and lab.underlay.links() == set()
    assert not [n for n in bridges.links() if n.startswith(("ysxvt", "ysw1", "ysw2"))]
