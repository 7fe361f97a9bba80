"""A network's VXLAN device and its unicast forwarding entries (iproute2's ``ip`` and ``bridge``).

One device per network that another host shares, ``ysTTv<net>``, plugged into the network's
bridge like a port::

    ip link add ysTTv<net> type vxlan id <VNI> local <tunnel ip> dstport 4789 nolearning
    bridge fdb append 00:00:00:00:00:00 dev ysTTv<net> dst <peer>    # per peer: BUM, head-end replication
    bridge fdb append <remote port MAC> dev ysTTv<net> dst <its host> # per port on another host

``nolearning`` and no multicast group: the device only knows what the control plane told it
(``TunnelState.fdb``), so a frame never floods to a host that does not have the network, and a
MAC cannot be claimed by a forged frame from the underlay.  ``sync_fdb`` makes the device's
entries exactly that list: it adds what is missing and deletes what is stale.
"""

from __future__ import annotations

import json

from yunstack.network.dataplane import _cmd, bridges
from yunstack.network.desired import FdbEntry, TunnelState

VXLAN_PORT = 4789  # IANA's VXLAN port (the kernel's default, 8472, is Linux's pre-standard one)


def ensure(name: str, bridge: str, tunnel: TunnelState, local_ip: str, mtu: int,
           have: dict[str, bridges.Link]) -> bool:
    """Create (or re-create, when its VNI, local address or port differ) the device; plug it in."""
    link = have.get(name)
    changed = False
    if link is not None and link.vxlan != (tunnel.vni, local_ip, VXLAN_PORT):
        bridges.delete(name)
        have = {k: v for k, v in have.items() if k != name}
        link = None
    if link is None:
        _cmd.run(["ip", "link", "add", "name", name, "type", "vxlan", "id", str(tunnel.vni), "local", local_ip,
                  "dstport", str(VXLAN_PORT), "nolearning"])
        bridges.no_ipv6(name)
        changed = True
    return bridges.ensure_port(name, bridge, mtu, have) or changed


def fdb(name: str) -> set[FdbEntry]:
    """The device's own forwarding entries with a remote destination (the kernel's own are left out)."""
    out = _cmd.run(["bridge", "-json", "fdb", "show", "dev", name]).strip()
    items = json.loads(out) if out else []
    return {FdbEntry(mac=str(i["mac"]).lower(), dst=str(i["dst"])) for i in items
            if isinstance(i, dict) and i.get("dst") and "master" not in i}


def sync_fdb(name: str, wanted: tuple[FdbEntry, ...]) -> tuple[list[FdbEntry], list[FdbEntry]]:
    """Make the device's entries exactly ``wanted``; returns (added, removed)."""
    have = fdb(name)
    want = set(wanted)
    removed = sorted(have - want, key=lambda e: (e.mac, e.dst))
    added = sorted(want - have, key=lambda e: (e.mac, e.dst))
    for e in removed:
        _cmd.run(["bridge", "fdb", "del", e.mac, "dev", name, "dst", e.dst], check=False)
    for e in added:
        _cmd.run(["bridge", "fdb", "append", e.mac, "dev", name, "dst", e.dst])
    return added, removed
