"""Security groups as stateful per-port rules: br_netfilter + iptables-nft physdev + conntrack.

This kernel cannot track connections in the nft *bridge* family (no ``NF_CONNTRACK_BRIDGE``), so,
like Neutron's ``iptables_hybrid`` driver, bridged frames are handed to the ``filter`` tables by
br_netfilter (IPv4 to iptables, IPv6 to ip6tables) and matched there by the bridge port
(``-m physdev``).  Both families get the same chain structure, with the same names (the ``ip`` and
``ip6`` tables are separate)::

    FORWARD  -o ysTTb+ -m physdev --physdev-is-bridged -j ys-TT-fwd
    INPUT    -i ysTTb+ -j ys-TT-in
    ys-TT-fwd  --physdev-in  <tap>  -> ys-TT-o<port>   (egress: from the VM)
               --physdev-out <tap>  -> ys-TT-i<port>   (ingress: to the VM)
               ... every secured port ..., then ACCEPT (the rest of our bridges' traffic)
    ys-TT-in   --physdev-in  <tap>  -> ys-TT-o<port>   (VM -> an address of the host)

A port chain ends in DROP; what it allows it RETURNs, so that a VM-to-VM frame passes the
sender's egress chain *and* the receiver's ingress chain before the final ACCEPT.  ARP and MAC
spoofing, which iptables never sees, are dropped statelessly in the nft bridge table
``yunstack_TT``.  Ports with ``port_security_enabled=False`` get no chains at all.

IPv6 follows Neutron: neighbour discovery and MLD pass both ways before conntrack (the kernel does
not track them), router advertisements reach a VM only from the link-local address of its
network's RA sender (the DHCP namespace or a router interface) and never leave a VM, DHCPv6 goes
out to servers and comes back only from the network's DHCP namespace, and the anti-spoofing chain
allows the port's addresses, the SLAAC address of each SLAAC subnet and its EUI-64 link-local
address, each with the port's MAC.

One bad value never costs the other ports their rules: ``problems`` names each port whose values
cannot be rendered, and those ports are *quarantined*: their chains drop everything, both ways,
while every other port gets its rules.  A rule that cannot be rendered allows nothing (and is
reported); the rest of its group still applies.

Everything is rendered as text and loaded atomically (``iptables-restore --noflush``, ``nft -f``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Collection, Iterable, Sequence

from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import (
    HostNetworkState,
    NetworkState,
    PortState,
    SecurityGroupRule,
    SecurityGroupState,
)

log = logging.getLogger(__name__)

_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "1": "icmp", "6": "tcp", "17": "udp",
              "ipv6-icmp": "ipv6-icmp", "icmpv6": "ipv6-icmp", "58": "ipv6-icmp"}
_NAMED = ("tcp", "udp", "icmp", "ipv6-icmp", "sctp", "gre", "esp", "ah")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# ICMPv6 that must pass before conntrack (it is not tracked): MLD query/report/done (130-132),
# neighbour solicitation/advertisement (135, 136), MLDv2 report (143).
_ND_TYPES = (130, 131, 132, 135, 136, 143)
_RS, _RA = 133, 134
TABLES = {4: "iptables", 6: "ip6tables"}


def secured_ports(state: HostNetworkState) -> list[PortState]:
    return sorted((p for p in state.ports if p.port_security_enabled), key=lambda p: p.id)


def chains(names: Names, state: HostNetworkState) -> list[str]:
    """Every chain of ours that ``state`` needs, in a stable order (the same in both families)."""
    found = [names.fwd_chain, names.in_chain]
    for port in secured_ports(state):
        found += names.port_chains(port.id)
    return found


def hook_rules(names: Names) -> list[tuple[str, list[str]]]:
    """(built-in chain, rule) pairs that send our bridges' traffic to our chains."""
    return [
        ("FORWARD", ["-o", f"{names.ifprefix}b+", "-m", "physdev", "--physdev-is-bridged",
                     "-m", "comment", "--comment", f"yunstack {names.tag}", "-j", names.fwd_chain]),
        ("INPUT", ["-i", f"{names.ifprefix}b+", "-m", "comment", "--comment", f"yunstack {names.tag}",
                   "-j", names.in_chain]),
    ]


# -- validation ------------------------------------------------------------------------------------


def mac_ok(mac: str | None) -> bool:
    return mac is not None and bool(_MAC.match(mac.lower()))


def port_problem(port: PortState) -> str | None:
    """Why ``port``'s own values cannot be rendered, or None when they can."""
    if not mac_ok(port.mac_address):
        return f"bad MAC address {port.mac_address!r}"
    for fixed in port.fixed_ips:
        try:
            ipaddress.ip_address(fixed.ip_address)
        except ValueError:
            return f"bad fixed IP {fixed.ip_address!r}"
    for ip, mac in port.allowed_address_pairs:
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            return f"bad allowed address pair IP {ip!r}"
        if mac is not None and not mac_ok(mac):
            return f"bad allowed address pair MAC {mac!r}"
    return None


def problems(state: HostNetworkState) -> dict[str, str]:
    """Port id -> why it is quarantined, for every secured port whose values cannot be rendered."""
    found: dict[str, str] = {}
    for port in secured_ports(state):
        reason = port_problem(port)
        if reason is not None:
            found[port.id] = reason
    return found


# -- the filter tables -----------------------------------------------------------------------------


def render_filter(names: Names, state: HostNetworkState, obsolete: Iterable[str] = (), *, family: int = 4,
                  quarantined: Collection[str] = ()) -> str:
    """The ``iptables-restore --noflush`` (``ip6tables-restore`` for 6) text that rewrites our chains.

    ``obsolete`` chains are declared too, which flushes them; delete them afterwards with
    ``render_delete`` (iptables-nft cannot delete a chain that the same batch unreferences).
    Ports in ``quarantined`` (and ports whose values ``port_problem`` rejects) drop everything.
    """
    sgs = {sg.id: sg for sg in state.security_groups}
    nets = {n.id: n for n in state.networks}
    bad = set(quarantined) | set(problems(state))
    wanted = chains(names, state)
    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in [*wanted, *sorted(set(obsolete) - set(wanted))]]
    lines += _dispatch(names, secured_ports(state))
    for port in secured_ports(state):
        if port.id in bad:
            lines += quarantine_rules(names, port)
        else:
            lines += port_rules(names, port, sgs, nets.get(port.network_id), family)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _dispatch(names: Names, ports: Sequence[PortState]) -> list[str]:
    fwd, inp = names.fwd_chain, names.in_chain
    lines: list[str] = []
    for port in ports:
        _, egress, _ = names.port_chains(port.id)
        tap = names.tap(port.id)
        lines.append(f"-A {fwd} -m physdev --physdev-in {tap} --physdev-is-bridged -j {egress}")
        lines.append(f"-A {inp} -m physdev --physdev-in {tap} -j {egress}")
    for port in ports:
        ingress, _, _ = names.port_chains(port.id)
        lines.append(f"-A {fwd} -m physdev --physdev-out {names.tap(port.id)} --physdev-is-bridged "
                     f"-j {ingress}")
    lines.append(f"-A {fwd} -j ACCEPT")
    return lines


def render_port(names: Names, state: HostNetworkState, port: PortState, family: int) -> str:
    """One port's chains alone, for ``iptables-restore --test`` (finding the port a batch chokes on)."""
    sgs = {sg.id: sg for sg in state.security_groups}
    nets = {n.id: n for n in state.networks}
    lines = ["*filter", *[f":{c} - [0:0]" for c in names.port_chains(port.id)]]
    lines += port_rules(names, port, sgs, nets.get(port.network_id), family)
    return "\n".join([*lines, "COMMIT"]) + "\n"


def render_delete(chain_names: Iterable[str]) -> str:
    """Restore text that deletes (already flushed and unreferenced) chains."""
    body = [f"-X {c}" for c in sorted(chain_names)]
    return "\n".join(["*filter", *body, "COMMIT"]) + "\n" if body else ""


def quarantine_rules(names: Names, port: PortState) -> list[str]:
    """Fail closed: a port whose rules cannot be built passes nothing either way."""
    return [f"-A {chain} -j DROP" for chain in names.port_chains(port.id)]


def port_rules(names: Names, port: PortState, sgs: dict[str, SecurityGroupState], net: NetworkState | None,
               family: int) -> list[str]:
    if family == 6:
        return _port_rules_v6(names, port, sgs, net)
    return _port_rules_v4(names, port, sgs, net)


def _port_rules_v4(names: Names, port: PortState, sgs: dict[str, SecurityGroupState],
                   net: NetworkState | None) -> list[str]:
    ingress, egress, spoof = names.port_chains(port.id)
    dhcp_servers = [s.dhcp_ip for s in net.subnets if s.enable_dhcp and s.dhcp_ip and s.ip_version == 4] \
        if net else []
    out: list[str] = []
    # Egress.  DHCP requests come from 0.0.0.0, before anti-spoofing could pass them.
    out.append(f"-A {egress} -p udp -m udp --sport 68 --dport 67 -j RETURN")
    out.append(f"-A {egress} -j {spoof}")
    out.append(f"-A {egress} -p udp -m udp --sport 67 --dport 68 -j DROP")  # no rogue DHCP servers
    out.append(f"-A {egress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    out.append(f"-A {egress} -m conntrack --ctstate INVALID -j DROP")
    out += [f"-A {egress} {r} -j RETURN" for r in _group_rules(port, sgs, "egress", 4)]
    out.append(f"-A {egress} -j DROP")
    # Anti-spoofing: the port's own addresses with its own MAC, plus allowed address pairs.
    for ip, mac in allowed_sources(port, net, 4):
        out.append(f"-A {spoof} -s {ip} -m mac --mac-source {mac} -j RETURN")
    out.append(f"-A {spoof} -j DROP")
    # Ingress.
    out.append(f"-A {ingress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    out.append(f"-A {ingress} -m conntrack --ctstate INVALID -j DROP")
    if dhcp_servers:
        out += [f"-A {ingress} -s {ip}/32 -p udp -m udp --sport 67 --dport 68 -j RETURN"
                for ip in dhcp_servers]
    else:
        out.append(f"-A {ingress} -p udp -m udp --sport 67 --dport 68 -j RETURN")
    out += [f"-A {ingress} {r} -j RETURN" for r in _group_rules(port, sgs, "ingress", 4)]
    out.append(f"-A {ingress} -j DROP")
    return out


def _port_rules_v6(names: Names, port: PortState, sgs: dict[str, SecurityGroupState],
                   net: NetworkState | None) -> list[str]:
    ingress, egress, spoof = names.port_chains(port.id)
    icmp6 = "-p ipv6-icmp -m icmp6 --icmpv6-type"
    out: list[str] = []
    # Egress.  Duplicate address detection and MLD reports are sent from :: before the guest owns
    # an address; everything else must come from one of its own addresses with its own MAC.
    out += [f"-A {egress} -s ::/128 -d ff02::/16 {icmp6} {t} -j RETURN" for t in (131, 135, 143)]
    out.append(f"-A {egress} -j {spoof}")
    out.append(f"-A {egress} {icmp6} {_RA} -j DROP")  # a VM is never a router
    out += [f"-A {egress} {icmp6} {t} -j RETURN" for t in (_RS, *_ND_TYPES)]
    out.append(f"-A {egress} -p udp -m udp --sport 546 --dport 547 -j RETURN")  # DHCPv6 client
    out.append(f"-A {egress} -p udp -m udp --sport 547 --dport 546 -j DROP")  # no rogue DHCPv6 servers
    out.append(f"-A {egress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    out.append(f"-A {egress} -m conntrack --ctstate INVALID -j DROP")
    out += [f"-A {egress} {r} -j RETURN" for r in _group_rules(port, sgs, "egress", 6)]
    out.append(f"-A {egress} -j DROP")
    for ip, mac in allowed_sources(port, net, 6):
        out.append(f"-A {spoof} -s {ip} -m mac --mac-source {mac} -j RETURN")
    out.append(f"-A {spoof} -j DROP")
    # Ingress: neighbour discovery and MLD from anyone on the link, RAs and DHCPv6 replies only from
    # this network's own RA sender and DHCP namespace (by their link-local addresses).
    out += [f"-A {ingress} {icmp6} {t} -j RETURN" for t in _ND_TYPES]
    out += [f"-A {ingress} -s {lla}/128 {icmp6} {_RA} -j RETURN" for lla in ra_sources(net)]
    out.append(f"-A {ingress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    out.append(f"-A {ingress} -m conntrack --ctstate INVALID -j DROP")
    if net is not None and net.dhcp_mac and mac_ok(net.dhcp_mac):
        out.append(f"-A {ingress} -s {link_local(net.dhcp_mac)}/128 -p udp -m udp --sport 547 --dport 546 "
                   "-j RETURN")
    out += [f"-A {ingress} {r} -j RETURN" for r in _group_rules(port, sgs, "ingress", 6)]
    out.append(f"-A {ingress} -j DROP")
    return out


# -- addresses -------------------------------------------------------------------------------------


def eui64(prefix: str, mac: str) -> str:
    """The address a guest makes from ``mac`` in a /64 (RFC 4291 modified EUI-64)."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    iid = bytes([*octets[:3], 0xFF, 0xFE, *octets[3:]])
    net = ipaddress.IPv6Network(prefix, strict=False)
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def link_local(mac: str) -> str:
    return eui64("fe80::/64", mac.lower())


def slaac_subnets(net: NetworkState | None) -> list[str]:
    """CIDRs of the network's /64 subnets whose guests make their own address (SLAAC)."""
    if net is None:
        return []
    return [s.cidr for s in net.subnets
            if s.ip_version == 6 and s.ipv6_address_mode in ("slaac", "dhcpv6-stateless")
            and ipaddress.ip_network(s.cidr, strict=False).prefixlen == 64]


def ra_sources(net: NetworkState | None) -> list[str]:
    """Link-local addresses that may send RAs on ``net``: its DHCP namespace (see ``dhcp.py``)."""
    if net is None or not any(s.ip_version == 6 and s.ipv6_ra_mode for s in net.subnets):
        return []
    return [link_local(net.dhcp_mac)] if net.dhcp_mac and mac_ok(net.dhcp_mac) else []


def allowed_sources(port: PortState, net: NetworkState | None, family: int) -> list[tuple[str, str]]:
    """(source address or CIDR, MAC) pairs the port may send from, for one family."""
    mac = port.mac_address.lower()
    host = 32 if family == 4 else 128
    found = [(f"{f.ip_address}/{host}", mac) for f in port.fixed_ips if _version(f.ip_address) == family]
    if family == 6:
        found.append((f"{link_local(mac)}/128", mac))
        found += [(f"{eui64(cidr, mac)}/128", mac) for cidr in slaac_subnets(net)]
    for ip, pair_mac in port.allowed_address_pairs:
        net_ = ipaddress.ip_network(ip, strict=False)
        if net_.version == family:
            pair = (pair_mac or mac).lower()
            found.append((str(net_), pair))
            if family == 6 and pair != mac:
                found.append((f"{link_local(pair)}/128", pair))
    return list(dict.fromkeys(found))


def _version(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


# -- security group rules --------------------------------------------------------------------------


def _group_rules(port: PortState, sgs: dict[str, SecurityGroupState], direction: str, family: int) -> list[str]:
    """The iptables matches of the port's security group rules for one direction and family."""
    ethertype = "IPv4" if family == 4 else "IPv6"
    out: list[str] = []
    for sg_id in port.security_group_ids:
        sg = sgs.get(sg_id)
        for rule in sg.rules if sg else ():
            if rule.direction != direction or rule.ethertype != ethertype:
                continue
            try:
                out += rule_matches(rule, direction, sgs, family)
            except ValueError as exc:
                # Fail closed for this rule only: the group's other rules still apply.
                log.warning("security group rule %s of group %s is not applied: %s", rule.id, sg_id, exc)
    # Identical rules from two groups would only cost a lookup each; drop the repeats.
    return list(dict.fromkeys(out))


def rule_matches(rule: SecurityGroupRule, direction: str, sgs: dict[str, SecurityGroupState],
                 family: int = 4) -> list[str]:
    """One security group rule as iptables match strings (several for a remote group).

    Raises ``ValueError`` for a value that cannot be rendered safely.
    """
    parts: list[str] = []
    proto = (rule.protocol or "").lower()
    if proto in ("", "any", "0"):
        proto = ""
    else:
        proto = _PROTOCOLS.get(proto, proto)
        if family == 6 and proto == "icmp":
            proto = "ipv6-icmp"  # Neutron accepts "icmp" in an IPv6 rule and means ICMPv6
        if family == 4 and proto == "ipv6-icmp":
            return []
        if not (proto in _NAMED or (proto.isdigit() and int(proto) <= 255)):
            raise ValueError(f"bad protocol {rule.protocol!r}")
        parts += ["-p", proto]
    for value in (rule.port_range_min, rule.port_range_max):
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(f"bad port {value!r}")
    if proto in ("tcp", "udp", "sctp") and rule.port_range_min is not None:
        hi = rule.port_range_max if rule.port_range_max is not None else rule.port_range_min
        ports = str(rule.port_range_min) if hi == rule.port_range_min else f"{rule.port_range_min}:{hi}"
        parts += ["-m", proto, "--dport", ports]
    elif proto in ("icmp", "ipv6-icmp") and rule.port_range_min is not None:
        if rule.port_range_min > 255 or (rule.port_range_max is not None and rule.port_range_max > 255):
            raise ValueError(f"bad ICMP type/code {rule.port_range_min}/{rule.port_range_max}")
        icmp = str(rule.port_range_min)
        if rule.port_range_max is not None:
            icmp += f"/{rule.port_range_max}"
        parts += ["-m", "icmp", "--icmp-type", icmp] if proto == "icmp" else ["-m", "icmp6", "--icmpv6-type", icmp]
    flag = "-s" if direction == "ingress" else "-d"
    if rule.remote_ip_prefix:
        net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if net.version != family:
            return []
        return [" ".join([*parts, flag, str(net)])] if net.prefixlen else [" ".join(parts)]
    if rule.remote_group_id:
        remote = sgs.get(rule.remote_group_id)
        host = 32 if family == 4 else 128
        members = [ip for ip in (remote.member_ips if remote else ()) if _version(ip) == family]
        return [" ".join([*parts, flag, f"{ip}/{host}"]) for ip in sorted(set(members))]
    return [" ".join(parts)]


# -- the bridge table ------------------------------------------------------------------------------


def render_bridge_table(names: Names, state: HostNetworkState, quarantined: Collection[str] = ()) -> str:
    """``nft -f`` text that atomically replaces our bridge-family table (stateless anti-spoofing).

    Frames from a secured port must carry its MAC (or an allowed pair's) and ARP must claim one of
    its addresses (0.0.0.0 is a probe and allowed).  IPv6 passes to ip6tables: this nft (1.0.6) has
    no match for a neighbour advertisement's target, so, as with Neutron's iptables driver, an NA
    is only checked for its source address and MAC.  A quarantined port's frames are dropped both
    ways.
    """
    table = names.nft_table
    bad = set(quarantined) | set(problems(state))
    nets = {n.id: n for n in state.networks}
    lines = [f"table bridge {table} {{}}", f"delete table bridge {table}", f"table bridge {table} {{"]
    fwd = ["    type filter hook forward priority -10; policy accept;"]
    inp = ["    type filter hook input priority -10; policy accept;"]
    port_chains: list[str] = []
    for port in secured_ports(state):
        tap = names.tap(port.id)
        chain = f"p{tap[len(names.ifprefix) + 1:]}"
        fwd.append(f'    iifname "{tap}" jump {chain}')
        inp.append(f'    iifname "{tap}" jump {chain}')
        if port.id in bad:
            fwd.append(f'    oifname "{tap}" drop')
            port_chains += [f"  chain {chain} {{", "    drop", "  }"]
            continue
        net = nets.get(port.network_id)
        v4 = allowed_sources(port, net, 4)
        v6 = allowed_sources(port, net, 6)
        macs = sorted({mac for _, mac in v4 + v6})
        ips = sorted({ip for ip, _ in v4} | {"0.0.0.0/32"})
        port_chains += [f"  chain {chain} {{", f"    ether saddr != {{ {', '.join(macs)} }} drop",
                        f"    arp saddr ip != {{ {', '.join(ips)} }} drop"]
        port_chains.append("  }")
    lines += ["  chain ysfwd {", *fwd, "  }", "  chain ysin {", *inp, "  }", *port_chains, "}"]
    return "\n".join(lines) + "\n"
