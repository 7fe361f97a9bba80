"""Links on the host and in our namespaces: bridges, taps, veth pairs, addresses (iproute2).

iproute2 is called by argument list (``_cmd.run``) rather than through pyroute2: the commands are
the same ones an operator types to inspect the host, each change is one readable line in a
``DriverError`` when it fails, and no extra dependency is needed.  The cost (a fork per change)
only matters on changes: an unchanged host is checked with two ``ip -json`` listings.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunstack.network.dataplane import _cmd


@dataclass(frozen=True)
class Link:
    name: str
    kind: str  # "bridge", "tun", "veth", "vxlan", "" for others
    master: str | None
    mtu: int
    up: bool
    mac: str
    vxlan: tuple[int, str, int] | None = None  # a VXLAN device's (VNI, local address, UDP port)


def links(netns: str | None = None) -> dict[str, Link]:
    """Every link (of the host, or of ``netns``), by name."""
    found: dict[str, Link] = {}
    for item in _cmd.ip_json("-details", "link", "show", netns=netns):
        info: dict[str, Any] = item.get("linkinfo") or {}
        data: dict[str, Any] = info.get("info_data") or {}
        kind = str(info.get("info_kind", ""))
        found[item["ifname"]] = Link(
            name=item["ifname"], kind=kind, master=item.get("master"),
            mtu=int(item.get("mtu", 0)), up="UP" in item.get("flags", []),
            mac=str(item.get("address", "")),
            vxlan=(int(data.get("id", 0)), str(data.get("local", "")), int(data.get("port", 0)))
            if kind == "vxlan" else None)
    return found


def addresses(dev: str, netns: str | None = None, family: int = 4) -> set[str]:
    """IPv4 (or global IPv6) addresses of ``dev`` as ``ip/prefixlen``; link-local ones are the kernel's."""
    out: set[str] = set()
    for item in _cmd.ip_json(f"-{family}", "addr", "show", "dev", dev, netns=netns):
        for a in item.get("addr_info", []):
            if family == 6 and a.get("scope") != "global":
                continue
            out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def sync_addresses(dev: str, wanted: set[str], netns: str | None = None) -> bool:
    """Make ``dev``'s IPv4 and global IPv6 addresses exactly ``wanted``; True when something changed.

    IPv6 addresses are added without duplicate address detection (``nodad``): they are ours by
    IPAM, and a tentative address would make dnsmasq fail to bind it.
    """
    changed = False
    for family in (4, 6):
        want = {a for a in wanted if (":" in a) == (family == 6)}
        have = addresses(dev, netns, family)
        for addr in sorted(have - want):
            _cmd.run(["ip", "addr", "del", addr, "dev", dev], netns=netns)
        for addr in sorted(want - have):
            _cmd.run(["ip", "addr", "add", addr, "dev", dev, *(["nodad"] if family == 6 else [])], netns=netns)
        changed = changed or have != want
    return changed


def no_ipv6(dev: str, netns: str | None = None) -> None:
    """Keep the host's IPv6 (router solicitations, DAD) off a tenant network."""
    if netns is None:
        path = Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
        with contextlib.suppress(OSError):
            path.write_text("1")
    else:
        _cmd.run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], netns=netns, check=False)


def stable_mac(name: str) -> str:
    """A locally administered unicast MAC derived from an interface name."""
    digest = hashlib.sha256(name.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def ensure_bridge(name: str, mtu: int, have: dict[str, Link]) -> bool:
    """Create or fix a bridge; True when something changed."""
    link = have.get(name)
    changed = False
    if link is None:
        # No STP, no forwarding delay: a port forwards the moment it is plugged in.
        # A fixed MAC: otherwise the bridge takes its lowest port's, and a host address on it
        # (the external network's gateway) would change MAC whenever a port comes or goes.
        _cmd.run(["ip", "link", "add", "name", name, "address", stable_mac(name), "type", "bridge",
                  "stp_state", "0", "forward_delay", "0"])
        no_ipv6(name)
        changed = True
    if link is None or link.mtu != mtu:
        _cmd.run(["ip", "link", "set", "dev", name, "mtu", str(mtu)])
        changed = True
    if link is None or not link.up:
        _cmd.run(["ip", "link", "set", "dev", name, "up"])
        changed = True
    return changed


def ensure_port(name: str, bridge: str, mtu: int, have: dict[str, Link]) -> bool:
    """Plug an existing host link into ``bridge`` with ``mtu`` and bring it up."""
    link = have.get(name)
    changed = False
    if link is None or link.master != bridge:
        _cmd.run(["ip", "link", "set", "dev", name, "master", bridge])
        changed = True
    if link is None or link.mtu != mtu:
        _cmd.run(["ip", "link", "set", "dev", name, "mtu", str(mtu)])
        changed = True
    if link is None or not link.up:
        _cmd.run(["ip", "link", "set", "dev", name, "up"])
        changed = True
    return changed


def ensure_tap(name: str, bridge: str, mtu: int, have: dict[str, Link]) -> bool:
    """A persistent tap (it outlives QEMU) plugged into ``bridge``."""
    created = False
    if name in have and have[name].kind != "tun":
        delete(name)
        have = {k: v for k, v in have.items() if k != name}
    if name not in have:
        _cmd.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        no_ipv6(name)
        created = True
    return ensure_port(name, bridge, mtu, have) or created


def ensure_veth(host_end: str, bridge: str, peer: str, netns: str, mtu: int, mac: str | None,
                have: dict[str, Link], have_ns: dict[str, Link]) -> bool:
    """A veth pair: ``host_end`` in ``bridge``, ``peer`` inside ``netns`` (up, with ``mac``)."""
    changed = False
    if host_end in have and peer not in have_ns:
        delete(host_end)  # half of a pair (the namespace was recreated): start over
        have = {k: v for k, v in have.items() if k != host_end}
    if host_end not in have:
        # Create the peer directly inside the namespace: it never exists on the host.
        _cmd.run(["ip", "link", "add", "name", host_end, "type", "veth", "peer", "name", peer,
                  "netns", netns])
        no_ipv6(host_end)
        have_ns = {k: v for k, v in have_ns.items() if k != peer}
        changed = True
    changed = ensure_port(host_end, bridge, mtu, have) or changed
    link = have_ns.get(peer)
    if mac and (link is None or link.mac.lower() != mac.lower()):
        _cmd.run(["ip", "link", "set", "dev", peer, "address", mac], netns=netns)
        changed = True
    if link is None or link.mtu != mtu:
        _cmd.run(["ip", "link", "set", "dev", peer, "mtu", str(mtu)], netns=netns)
        changed = True
    if link is None or not link.up:
        _cmd.run(["ip", "link", "set", "dev", peer, "up"], netns=netns)
        changed = True
    return changed


def delete(name: str, netns: str | None = None) -> None:
    """Delete a link; gone already is fine."""
    _cmd.run(["ip", "link", "del", "dev", name], netns=netns, check=False)


def namespaces() -> set[str]:
    return {item["name"] for item in _cmd.ip_json("netns", "list")}


def ensure_namespace(name: str, have: set[str]) -> bool:
    if name in have:
        return False
    _cmd.run(["ip", "netns", "add", name])
    _cmd.run(["ip", "link", "set", "dev", "lo", "up"], netns=name)
    return True


def delete_namespace(name: str) -> None:
    """Delete a namespace; the veth ends inside it go with it (and so do their host peers)."""
    _cmd.run(["ip", "netns", "del", name], check=False)
