"""A lab underlay on one machine: N network namespaces ("hosts") joined to one bridge.

For the VXLAN integration test and ``yun up --hosts N``: each lab host is a network namespace
with one veth into a bridge in the host's own namespace, and an address of a private test range
(``10.250.K.0/24`` by default).  The bridge holds ``.1``, the control host's underlay address
(the control plane listens there, and it is the network host's tunnel address); the lab hosts get
``.2``, ``.3``, ...::

    host netns:   ysx<L>br  10.250.K.1/24
                    |- ysx<L>h1 ==veth== eth0  in netns ysx-<L>-h1  10.250.K.2/24
                    |- ysx<L>h2 ==veth== eth0  in netns ysx-<L>-h2  10.250.K.3/24

``<L>`` is the lab's tag (1-3 of ``[a-z0-9]``).  The ``ysx`` prefix cannot be an installation's
(their tags are base32: ``0-9a-v``), so no installation ever takes a lab link for its own.  The
host's uplink, routes and forwarding are never touched: the range is checked against every
address the host already has, and ``remove`` deletes the namespaces, veths and bridge again.

Run by hand: ``python -m yunstack.lab.underlay up 3`` / ``... down`` (as root).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from dataclasses import dataclass

from yunstack.errors import BadRequest
from yunstack.network.dataplane import _cmd, bridges

DEFAULT_CIDR = "10.250.0.0/24"


@dataclass(frozen=True, kw_only=True)
class LabHost:
    """One lab host: its name, its network namespace, its underlay address and the veth's host end."""

    name: str
    netns: str
    ip: str
    veth: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *command]


class Underlay:
    """The lab underlay ``tag``: create N hosts on ``cidr``, remove them all."""

    def __init__(self, tag: str = "lb", cidr: str = DEFAULT_CIDR, mtu: int = 1500) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,3}", tag):
            raise BadRequest("Lab tag {tag!r}: 1-3 characters of a-z and 0-9.", tag=tag)
        net = ipaddress.IPv4Network(cidr)
        if not net.is_private or net.prefixlen > 29:
            raise BadRequest("Lab underlay {cidr}: a private IPv4 range of /29 or larger.", cidr=cidr)
        self.tag, self.network, self.mtu = tag, net, mtu
        self.bridge = f"ysx{tag}br"
        self.prefix = f"ysx{tag}h"
        self.nsprefix = f"ysx-{tag}-h"

    @property
    def gateway_ip(self) -> str:
        """The bridge's address: the control host's end of the underlay."""
        return str(self.network.network_address + 1)

    def host(self, index: int) -> LabHost:
        """Lab host ``index`` (1-based)."""
        if not 1 <= index <= min(99, self.network.num_addresses - 3):
            raise BadRequest("Lab host {index}: out of range.", index=index)
        return LabHost(name=f"h{index}", netns=f"{self.nsprefix}{index}",
                       ip=str(self.network.network_address + 1 + index), veth=f"{self.prefix}{index}")

    def create(self, count: int) -> list[LabHost]:
        """The bridge and ``count`` hosts (anything left of this lab from before is removed first)."""
        self.remove()
        self._check_range()
        plen = self.network.prefixlen
        try:
            _cmd.run(["ip", "link", "add", "name", self.bridge, "type", "bridge", "stp_state", "0",
                      "forward_delay", "0"])
            bridges.no_ipv6(self.bridge)
            _cmd.run(["ip", "link", "set", "dev", self.bridge, "mtu", str(self.mtu), "up"])
            _cmd.run(["ip", "addr", "add", f"{self.gateway_ip}/{plen}", "dev", self.bridge])
            hosts = [self.host(i) for i in range(1, count + 1)]
            for h in hosts:
                _cmd.run(["ip", "netns", "add", h.netns])
                _cmd.run(["ip", "link", "add", "name", h.veth, "mtu", str(self.mtu), "type", "veth", "peer",
                          "name", "eth0", "mtu", str(self.mtu), "netns", h.netns])
                bridges.no_ipv6(h.veth)
                _cmd.run(["ip", "link", "set", "dev", h.veth, "master", self.bridge, "up"])
                _cmd.run(["ip", "link", "set", "dev", "lo", "up"], netns=h.netns)
                _cmd.run(["ip", "addr", "add", f"{h.ip}/{plen}", "dev", "eth0"], netns=h.netns)
                _cmd.run(["ip", "link", "set", "dev", "eth0", "up"], netns=h.netns)
        except BaseException:
            self.remove()
            raise
        return hosts

    def remove(self) -> None:
        """Delete every namespace, veth and the bridge of this lab (whatever is there)."""
        for ns in sorted(self.namespaces()):
            bridges.delete_namespace(ns)  # takes its veth pair along
        for name in sorted(self.links()):
            bridges.delete(name)

    def namespaces(self) -> set[str]:
        return {ns for ns in bridges.namespaces() if ns.startswith(self.nsprefix)}

    def links(self) -> set[str]:
        return {name for name in bridges.links() if name == self.bridge or name.startswith(self.prefix)}

    def _check_range(self) -> None:
        """Refuse a range that overlaps an address or a route the host has (its uplink, say)."""
        used: set[ipaddress.IPv4Network] = set()
        for item in _cmd.ip_json("-4", "addr", "show"):
            for a in item.get("addr_info", []):
                used.add(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
        for item in _cmd.ip_json("-4", "route", "show"):
            dst = str(item.get("dst", "default"))
            if dst != "default":
                used.add(ipaddress.IPv4Network(dst, strict=False))
        clash = sorted(str(n) for n in used if n.overlaps(self.network))
        if clash:
            raise BadRequest("Lab underlay {cidr} overlaps the host's {clash}; pick another range.",
                             cidr=str(self.network), clash=", ".join(clash))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yunstack.lab.underlay", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("count", type=int, nargs="?", default=2)
    parser.add_argument("--tag", default="lb")
    parser.add_argument("--cidr", default=DEFAULT_CIDR)
    args = parser.parse_args(argv)
    lab = Underlay(args.tag, args.cidr)
    if args.action == "down":
        lab.remove()
        return 0
    print(f"bridge {lab.bridge} {lab.gateway_ip}")
    for h in lab.create(args.count):
        print(f"{h.name} netns {h.netns} ip {h.ip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
