"""Every host object name of one yunstack installation, in one place.

Interface names are limited to 15 characters (IFNAMSIZ 16 with the NUL), so they are built as

    ys + TT + K + 10 hex digits of the owner's UUID        (2 + 2 + 1 + 10 = 15)

where ``TT`` is the *installation tag* (two characters of a hash of the state directory) and
``K`` says what the interface is:

    b  the bridge of a network                 ys3fb0f1e2d3c4b
    t  the tap of a VM port                    ys3ft9a8b7c6d5e
    d  the host end of a DHCP namespace veth   ys3fd0f1e2d3c4b   (by network id)
    r  the host end of a router interface      ys3fr<port id>
    g  the host end of a router gateway        ys3fg<router id>
    v  the VXLAN device of a network           ys3fv0f1e2d3c4b   (when another host shares it)

Interfaces *inside* our namespaces need no tag (the namespace is ours): ``ysdhcp`` in a DHCP
namespace, ``ysqr<port>`` / ``ysqg<router>`` in a router namespace.  Namespaces, iptables chains
(at most 28 characters) and the nft table carry the tag too:

    ys-TT-dhcp-<network id>   ys-TT-r-<router id>
    ys-TT-fwd  ys-TT-in  ys-TT-o<port>  ys-TT-i<port>  ys-TT-s<port>
    table bridge yunstack_TT

Two installations on one machine (separate state directories) therefore use disjoint names
unless their tags collide (1 in 1024); even then nothing is removed that is not also recorded in
this installation's own ``owned.json`` (see ``linux.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32, lower case: safe in every name kind
IFNAMSIZ = 15


def install_tag(state_dir: Path) -> str:
    """Two characters derived from the state directory's absolute path."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).digest()
    return _ALPHABET[digest[0] % 32] + _ALPHABET[digest[1] % 32]


def _hex(uuid: str, n: int = 10) -> str:
    return uuid.replace("-", "").lower()[:n]


class Names:
    """The names of one installation's host objects (see the module docstring)."""

    def __init__(self, tag: str) -> None:
        if len(tag) != 2 or any(c not in "0123456789abcdefghijklmnopqrstuvwxyz" for c in tag):
            raise ValueError(f"bad installation tag {tag!r}")
        self.tag = tag
        self.ifprefix = f"ys{tag}"
        self.nsprefix = f"ys-{tag}-"
        self.chainprefix = f"ys-{tag}-"
        self.nft_table = f"yunstack_{tag}"
        self.fwd_chain = f"ys-{tag}-fwd"
        self.in_chain = f"ys-{tag}-in"

    def _if(self, kind: str, uuid: str) -> str:
        name = f"{self.ifprefix}{kind}{_hex(uuid)}"
        assert len(name) <= IFNAMSIZ
        return name

    def bridge(self, network_id: str) -> str:
        return self._if("b", network_id)

    def tap(self, port_id: str) -> str:
        return self._if("t", port_id)

    def dhcp_veth(self, network_id: str) -> str:
        return self._if("d", network_id)

    def router_veth(self, port_id: str) -> str:
        return self._if("r", port_id)

    def gateway_veth(self, router_id: str) -> str:
        return self._if("g", router_id)

    def vxlan(self, network_id: str) -> str:
        return self._if("v", network_id)

    def dhcp_ns(self, network_id: str) -> str:
        return f"{self.nsprefix}dhcp-{network_id}"

    def router_ns(self, router_id: str) -> str:
        return f"{self.nsprefix}r-{router_id}"

    def port_chains(self, port_id: str) -> tuple[str, str, str]:
        """(ingress, egress, anti-spoofing) iptables chains of a port."""
        h = _hex(port_id)
        return f"ys-{self.tag}-i{h}", f"ys-{self.tag}-o{h}", f"ys-{self.tag}-s{h}"


# Interface names inside our own namespaces (no tag needed: the namespace is ours).
DHCP_IFNAME = "ysdhcp"


def router_port_ifname(port_id: str) -> str:
    return f"ysqr{_hex(port_id)}"


def router_gateway_ifname(router_id: str) -> str:
    return f"ysqg{_hex(router_id)}"
