"""Security groups as stateful per-port rules: br_netfilter + iptables-nft physdev + conntrack.

This kernel cannot track connections in the nft *bridge* family (no ``NF_CONNTRACK_BRIDGE``), so,
like Neutron's ``iptables_hybrid`` driver, bridged IPv4 frames are handed to the IPv4 ``filter``
table by br_netfilter and matched there by the bridge port (``-m physdev``)::

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

Everything is rendered as text and loaded atomically (``iptables-restore --noflush``, ``nft -f``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import HostNetworkState, PortState, SecurityGroupRule, SecurityGroupState

_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "1": "icmp", "6": "tcp", "17": "udp"}


def secured_ports(state: HostNetworkState) -> list[PortState]:
    return sorted((p for p in state.ports if p.port_security_enabled), key=lambda p: p.id)


def chains(names: Names, state: HostNetworkState) -> list[str]:
    """Every chain of ours that ``state`` needs, in a stable order."""
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


def render_filter(names: Names, state: HostNetworkState, obsolete: Iterable[str] = ()) -> str:
    """The ``iptables-restore --noflush`` text that (re)writes all of our chains.

    ``obsolete`` chains are declared too, which flushes them; delete them afterwards with
    ``render_delete`` (iptables-nft cannot delete a chain that the same batch unreferences).
    """
    sgs = {sg.id: sg for sg in state.security_groups}
    dhcp = _dhcp_servers(state)
    wanted = chains(names, state)
    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in [*wanted, *sorted(set(obsolete) - set(wanted))]]
    fwd, inp = names.fwd_chain, names.in_chain
    ports = secured_ports(state)
    for port in ports:
        ingress, egress, _ = names.port_chains(port.id)
        tap = names.tap(port.id)
        lines.append(f"-A {fwd} -m physdev --physdev-in {tap} --physdev-is-bridged -j {egress}")
        lines.append(f"-A {inp} -m physdev --physdev-in {tap} -j {egress}")
    for port in ports:
        ingress, egress, _ = names.port_chains(port.id)
        lines.append(f"-A {fwd} -m physdev --physdev-out {names.tap(port.id)} --physdev-is-bridged "
                     f"-j {ingress}")
    lines.append(f"-A {fwd} -j ACCEPT")
    for port in ports:
        lines += _port_rules(names, port, sgs, dhcp.get(port.network_id, ()))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_delete(chain_names: Iterable[str]) -> str:
    """Restore text that deletes (already flushed and unreferenced) chains."""
    body = [f"-X {c}" for c in sorted(chain_names)]
    return "\n".join(["*filter", *body, "COMMIT"]) + "\n" if body else ""


def _dhcp_servers(state: HostNetworkState) -> dict[str, tuple[str, ...]]:
    return {n.id: tuple(s.dhcp_ip for s in n.subnets if s.enable_dhcp and s.dhcp_ip and s.ip_version == 4)
            for n in state.networks}


def _port_rules(names: Names, port: PortState, sgs: dict[str, SecurityGroupState],
                dhcp_servers: Sequence[str]) -> list[str]:
    ingress, egress, spoof = names.port_chains(port.id)
    out: list[str] = []
    # Egress.  DHCP requests come from 0.0.0.0, before anti-spoofing could pass them.
    out.append(f"-A {egress} -p udp -m udp --sport 68 --dport 67 -j RETURN")
    out.append(f"-A {egress} -j {spoof}")
    out.append(f"-A {egress} -p udp -m udp --sport 67 --dport 68 -j DROP")  # no rogue DHCP servers
    out.append(f"-A {egress} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    out.append(f"-A {egress} -m conntrack --ctstate INVALID -j DROP")
    out += [f"-A {egress} {r} -j RETURN" for r in _group_rules(port, sgs, "egress")]
    out.append(f"-A {egress} -j DROP")
    # Anti-spoofing: the port's own addresses with its own MAC, plus allowed address pairs.
    for ip, mac in _allowed_sources(port):
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
    out += [f"-A {ingress} {r} -j RETURN" for r in _group_rules(port, sgs, "ingress")]
    out.append(f"-A {ingress} -j DROP")
    return out


def _allowed_sources(port: PortState) -> list[tuple[str, str]]:
    mac = port.mac_address.lower()
    found = [(f"{f.ip_address}/32", mac) for f in port.fixed_ips if _is_v4(f.ip_address)]
    for ip, pair_mac in port.allowed_address_pairs:
        if _is_v4(ip.split("/")[0]):
            net = ipaddress.ip_network(ip, strict=False)
            found.append((str(net), (pair_mac or mac).lower()))
    return found


def _is_v4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def _group_rules(port: PortState, sgs: dict[str, SecurityGroupState], direction: str) -> list[str]:
    """The iptables matches of the port's security group rules for one direction (IPv4 only)."""
    out: list[str] = []
    for sg_id in port.security_group_ids:
        sg = sgs.get(sg_id)
        for rule in sg.rules if sg else ():
            if rule.direction != direction or rule.ethertype != "IPv4":
                continue
            out += rule_matches(rule, direction, sgs)
    # Identical rules from two groups would only cost a lookup each; drop the repeats.
    return list(dict.fromkeys(out))


def rule_matches(rule: SecurityGroupRule, direction: str, sgs: dict[str, SecurityGroupState]) -> list[str]:
    """One security group rule as iptables match strings (several for a remote group)."""
    parts: list[str] = []
    proto = (rule.protocol or "").lower()
    if proto in ("", "any", "0"):
        proto = ""
    elif proto in ("ipv6-icmp", "icmpv6", "58"):
        return []
    else:
        proto = _PROTOCOLS.get(proto, proto)
        if not (proto.isdigit() or proto in ("tcp", "udp", "icmp", "sctp", "gre", "esp", "ah")):
            return []
        parts += ["-p", proto]
    if proto in ("tcp", "udp", "sctp") and rule.port_range_min is not None:
        hi = rule.port_range_max if rule.port_range_max is not None else rule.port_range_min
        ports = str(rule.port_range_min) if hi == rule.port_range_min else f"{rule.port_range_min}:{hi}"
        parts += ["-m", proto, "--dport", ports]
    elif proto == "icmp" and rule.port_range_min is not None:
        icmp = str(rule.port_range_min)
        if rule.port_range_max is not None:
            icmp += f"/{rule.port_range_max}"
        parts += ["-m", "icmp", "--icmp-type", icmp]
    flag = "-s" if direction == "ingress" else "-d"
    if rule.remote_ip_prefix:
        net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if net.version != 4:
            return []
        return [" ".join([*parts, flag, str(net)])] if net.prefixlen else [" ".join(parts)]
    if rule.remote_group_id:
        remote = sgs.get(rule.remote_group_id)
        members = [ip for ip in (remote.member_ips if remote else ()) if _is_v4(ip)]
        return [" ".join([*parts, flag, f"{ip}/32"]) for ip in sorted(set(members))]
    return [" ".join(parts)]


def render_bridge_table(names: Names, state: HostNetworkState) -> str:
    """``nft -f`` text that atomically replaces our bridge-family table (stateless anti-spoofing).

    Frames from a secured port must carry its MAC (or an allowed pair's), ARP must claim one of its
    addresses (0.0.0.0 is a probe and allowed), and IPv6 is dropped both ways: the dataplane is
    IPv4-only, so IPv6 could not be filtered by the security groups.
    """
    table = names.nft_table
    lines = [f"table bridge {table} {{}}", f"delete table bridge {table}", f"table bridge {table} {{"]
    fwd = ["    type filter hook forward priority -10; policy accept;"]
    inp = ["    type filter hook input priority -10; policy accept;"]
    port_chains: list[str] = []
    for port in secured_ports(state):
        tap = names.tap(port.id)
        chain = f"p{tap[len(names.ifprefix) + 1:]}"
        fwd.append(f'    iifname "{tap}" jump {chain}')
        fwd.append(f'    oifname "{tap}" ether type ip6 drop')
        inp.append(f'    iifname "{tap}" jump {chain}')
        sources = _allowed_sources(port)
        macs = sorted({mac for _, mac in sources} | {port.mac_address.lower()})
        ips = sorted({ip for ip, _ in sources} | {"0.0.0.0/32"})
        port_chains += [
            f"  chain {chain} {{",
            f"    ether saddr != {{ {', '.join(macs)} }} drop",
            f"    arp saddr ip != {{ {', '.join(ips)} }} drop",
            "    ether type ip6 drop",
            "  }",
        ]
    lines += ["  chain ysfwd {", *fwd, "  }", "  chain ysin {", *inp, "  }", *port_chains, "}"]
    return "\n".join(lines) + "\n"
