"""DHCP and DNS per network: dnsmasq inside the namespace ``ys-TT-dhcp-<network>``.

As in Neutron's DHCP agent, dnsmasq runs in a namespace of its own, attached to the network's
bridge by a veth pair whose inner end (``ysdhcp``) carries the DHCP port's address on each
subnet.  It only hands out static leases (``--dhcp-range ...,static``) from a hosts file of
``mac,ip,hostname`` lines, answers DNS for the instance names (``--addn-hosts``, ``--domain``)
and never forwards a query anywhere (``--no-resolv`` and no ``--server``).  Host changes are
picked up with SIGHUP (hosts, addn-hosts and options files are re-read); a change of the
command line (subnets, domain) restarts it.

Subnets without a router interface get the metadata route (option 121,
``169.254.169.254/32 via <dhcp ip>``) because their metadata proxy lives in this namespace.

IPv6 subnets are served by the same dnsmasq, after their ``ipv6_ra_mode`` (RAs) and
``ipv6_address_mode`` (addresses), as Neutron does (see docs/explanation/networking.md)::

    slaac             --dhcp-range=<prefix>,ra-only          RA with A flag: the guest makes its address
    dhcpv6-stateless  --dhcp-range=<prefix>,ra-stateless     A + O flags; DHCPv6 answers DNS only
    dhcpv6-stateful   --dhcp-range=<prefix>,static,<len>     M flag; DHCPv6 leases the port's address

``--enable-ra`` is given when any subnet has an ``ipv6_ra_mode``; a subnet without one gets no RA
from us (Neutron's meaning: an outside router advertises it), only DHCPv6 when its address mode
asks for it.  The RAs come from this namespace's
link-local address (EUI-64 of the DHCP port's MAC), which is the one address the security groups
let RAs come from.  With a router interface on the subnet the RA carries router lifetime 0
(``--ra-param``): the guest takes the prefix but not the DHCP namespace as its default router.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from yunstack.compute.driver import Ipv4Config
from yunstack.network.dataplane import _cmd, _proc
from yunstack.network.dataplane.naming import DHCP_IFNAME
from yunstack.network.desired import HostNetworkState, NetworkState, PortState, SubnetState

log = logging.getLogger(__name__)

METADATA_IP = "169.254.169.254"
LEASE_SECONDS = 86400
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class DhcpConfig:
    """Everything one network's dnsmasq is started with."""

    argv: tuple[str, ...]
    files: dict[str, str]  # file name in the work dir -> content
    addresses: frozenset[str]  # ip/prefixlen on ``ysdhcp``
    isolated_cidrs: tuple[str, ...]  # subnets whose metadata is served from this namespace


def dhcp_subnets(network: NetworkState) -> list[SubnetState]:
    """The subnets this network's dnsmasq serves (DHCPv4, DHCPv6 or router advertisements)."""
    return [s for s in network.subnets if s.enable_dhcp and s.dhcp_ip and (s.ip_version == 4 or _v6_mode(s))]


def _v6_mode(subnet: SubnetState) -> str | None:
    """How dnsmasq serves an IPv6 subnet: its ``ipv6_address_mode``, else its ``ipv6_ra_mode``.

    None (not served) when only an outside router is meant to serve it: no ``ipv6_ra_mode`` and an
    address mode that needs no DHCPv6 (``slaac``) or none at all.
    """
    mode = subnet.ipv6_address_mode or subnet.ipv6_ra_mode
    if not subnet.ipv6_ra_mode and mode not in ("dhcpv6-stateless", "dhcpv6-stateful"):
        return None
    return mode if mode in ("slaac", "dhcpv6-stateless", "dhcpv6-stateful") else None


def dns_servers(subnet: SubnetState) -> tuple[str, ...]:
    """The DNS servers DHCP gives on an IPv4 subnet: its own, else dnsmasq itself."""
    return tuple(subnet.dns_nameservers) or tuple(str(d) for d in (subnet.dhcp_ip,) if d)


def port_ipv4(state: HostNetworkState, port: PortState, domain: str) -> Ipv4Config | None:
    """What ``port``'s lease carries (its first IPv4 fixed IP on a subnet with DHCP), or None.

    Its classless routes (the subnet's host routes, the metadata route) are left out: whether a
    subnet has a router is known on the network host, and a compute host need not know it.
    """
    network = next((n for n in state.networks if n.id == port.network_id), None)
    subnets = {s.id: s for s in network.subnets} if network else {}
    for fixed in port.fixed_ips:
        subnet = subnets.get(fixed.subnet_id)
        if network is not None and subnet is not None and subnet.ip_version == 4 and subnet.enable_dhcp:
            prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
            return Ipv4Config(address=f"{fixed.ip_address}/{prefix}", gateway=subnet.gateway_ip,
                              dns=dns_servers(subnet), domain=domain, mtu=network.mtu)
    return None


def routed_subnets(state: HostNetworkState) -> set[str]:
    return {i.subnet_id for r in state.routers for i in r.interfaces}


def render(network: NetworkState, state: HostNetworkState, workdir: Path, domain: str) -> DhcpConfig:
    """The dnsmasq command line and files for ``network`` (pure: writes nothing)."""
    subnets = dhcp_subnets(network)
    routed = routed_subnets(state)
    argv = [
        "dnsmasq", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--strict-order",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--dhcp-leasefile={workdir / 'leases'}",
        f"--dhcp-hostsfile={workdir / 'host'}",
        f"--dhcp-optsfile={workdir / 'opts'}",
        f"--addn-hosts={workdir / 'addn_hosts'}",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        f"--interface={DHCP_IFNAME}", "--except-interface=lo", "--bind-interfaces",
        "--dhcp-authoritative", f"--domain={domain}", f"--local=/{domain}/",
        f"--dhcp-lease-max={max(16, 4 * sum(_size(s) for s in subnets))}",
    ]
    if not _nobody_can_read(workdir):
        # dnsmasq re-reads its files on SIGHUP after dropping to 'nobody'; a private state dir
        # would make that fail silently, so keep root (it is confined to its namespace).
        argv.append("--user=root")
    addresses: set[str] = set()
    opts: list[str] = []
    isolated: list[str] = []
    for index, subnet in enumerate(subnets):
        net = ipaddress.ip_network(subnet.cidr, strict=False)
        tag = f"s{index}"
        if net.version == 6:
            argv += _v6_range(subnet, net, tag, subnet.id in routed)
            addresses.add(f"{subnet.dhcp_ip}/{net.prefixlen}")
            if subnet.dns_nameservers:
                opts.append(f"tag:{tag},option6:dns-server,{','.join(f'[{d}]' for d in subnet.dns_nameservers)}")
            continue
        argv.append(f"--dhcp-range=set:{tag},{net.network_address},static,{net.netmask},{LEASE_SECONDS}s")
        addresses.add(f"{subnet.dhcp_ip}/{net.prefixlen}")
        opts.append(f"tag:{tag},option:router,{subnet.gateway_ip}" if subnet.gateway_ip
                    else f"tag:{tag},option:router")
        opts.append(f"tag:{tag},option:dns-server,{','.join(dns_servers(subnet))}")
        opts.append(f"tag:{tag},option:mtu,{network.mtu}")
        routes = [(dest, hop) for dest, hop in subnet.host_routes]
        if subnet.id not in routed:
            isolated.append(str(net))
            routes.append((f"{METADATA_IP}/32", str(subnet.dhcp_ip)))
        if routes:
            # RFC 3442: a client that takes option 121 ignores option 3, so repeat the default.
            if subnet.gateway_ip:
                routes.append(("0.0.0.0/0", subnet.gateway_ip))
            flat = ",".join(f"{d},{h}" for d, h in routes)
            opts.append(f"tag:{tag},option:classless-static-route,{flat}")
            opts.append(f"tag:{tag},249,{flat}")
    if any(s.ipv6_ra_mode for s in subnets if s.ip_version == 6):
        # Only subnets with an ipv6_ra_mode ask for our RAs; dnsmasq then advertises every IPv6
        # range it serves on ysdhcp (a network mixing both kinds gets RAs for both).
        argv.append("--enable-ra")
    argv = list(dict.fromkeys(argv))
    hosts: list[str] = []
    names: list[str] = []
    cidrs = {s.id: s for s in subnets}
    # This host's ports and, on the network host, those on other hosts (their DHCP crosses VXLAN).
    for port in sorted((*state.ports, *state.dhcp_ports), key=lambda p: p.id):
        if port.network_id != network.id:
            continue
        if not _MAC.match(port.mac_address.lower()):
            # One bad port must not cost the network its DHCP (dnsmasq rejects the whole file).
            log.warning("port %s gets no DHCP lease: bad MAC address %r", port.id, port.mac_address)
            continue
        for fixed in port.fixed_ips:
            served = cidrs.get(fixed.subnet_id)
            if served is None or not _is_ip(fixed.ip_address):
                continue
            hostname = _hostname(port.hostname, fixed.ip_address)
            if served.ip_version == 6:
                if _v6_mode(served) == "dhcpv6-stateful":
                    hosts.append(f"{port.mac_address.lower()},[{fixed.ip_address}],{hostname}")
            else:
                hosts.append(f"{port.mac_address.lower()},{fixed.ip_address},{hostname}")
            names.append(f"{fixed.ip_address}\t{hostname}.{domain} {hostname}")
    files = {"host": "\n".join(hosts) + "\n", "addn_hosts": "\n".join(names) + "\n",
             "opts": "\n".join(opts) + "\n"}
    return DhcpConfig(argv=tuple(argv), files=files, addresses=frozenset(addresses),
                      isolated_cidrs=tuple(isolated))


def _v6_range(subnet: SubnetState, net: ipaddress.IPv4Network | ipaddress.IPv6Network, tag: str,
              routed: bool) -> list[str]:
    mode = _v6_mode(subnet)
    if mode == "dhcpv6-stateful":
        out = [f"--dhcp-range=set:{tag},{net.network_address},static,{net.prefixlen},{LEASE_SECONDS}s"]
    elif mode == "dhcpv6-stateless":
        out = [f"--dhcp-range=set:{tag},{net.network_address},ra-stateless,{net.prefixlen},{LEASE_SECONDS}s"]
    else:
        out = [f"--dhcp-range=set:{tag},{net.network_address},ra-only,{net.prefixlen},{LEASE_SECONDS}s"]
    if routed:
        # The router namespace routes this subnet; we only advertise its prefix (interval 60 s,
        # router lifetime 0).  dnsmasq takes this per interface, so one routed subnet sets it.
        out.append(f"--ra-param={DHCP_IFNAME},60,0")
    return out


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _size(subnet: SubnetState) -> int:
    if subnet.ip_version == 6:
        return 256  # leases are static, one per port; this only sizes dnsmasq's lease table
    return min(ipaddress.ip_network(subnet.cidr, strict=False).num_addresses, 65536)


def _hostname(name: str, ip: str) -> str:
    label = "".join(c if c.isalnum() or c == "-" else "-" for c in name.split(".")[0]).strip("-")
    return label[:63] or "host-" + ip.replace(".", "-")


def _nobody_can_read(path: Path) -> bool:
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def ensure(config: DhcpConfig, workdir: Path, netns: str) -> str:
    """Start, reload (SIGHUP) or restart dnsmasq as needed; returns what it did ('' if nothing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    files_changed = False
    for name, content in config.files.items():
        path = workdir / name
        if not path.exists() or path.read_text() != content:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(content)
            os.chmod(tmp, 0o644)
            tmp.replace(path)
            files_changed = True
    argv_file = workdir / "argv.json"
    argv = list(config.argv)
    pidfile = workdir / "dnsmasq.pid"
    marker = str(pidfile)
    pid = _proc.running(pidfile, marker)
    recorded = json.loads(argv_file.read_text()) if argv_file.exists() else None
    hosts = config.files.get("host", "")
    if pid is not None and recorded == argv and not _stale_leases(workdir / "leases", hosts):
        if files_changed:
            os.kill(pid, signal.SIGHUP)
            return "reloaded"
        return ""
    what = "restarted" if pid is not None else "started"
    _proc.stop(pidfile, marker)
    # dnsmasq keeps a deleted port's lease (a day) and refuses the address to the next port that
    # IPAM gives it ("not using configured address ... because it is leased to ..."); SIGHUP does
    # not forget leases, so they go from the file while dnsmasq is stopped.
    _drop_stale_leases(workdir / "leases", hosts)
    argv_file.write_text(json.dumps(argv))
    _cmd.run(argv, netns=netns)  # dnsmasq daemonizes once it is listening
    deadline = time.monotonic() + 3.0
    while _proc.running(pidfile, marker) is None:
        if time.monotonic() > deadline:
            raise _cmd.CommandFailed(" ".join(argv), 0, f"no live pid in {pidfile}")
        time.sleep(0.02)
    return what


def _static(hosts: str) -> set[tuple[str, str]]:
    """(mac, IPv4) of each dhcp-host line."""
    pairs = (line.split(",") for line in hosts.splitlines() if line)
    return {(p[0], p[1]) for p in pairs if len(p) > 1 and not p[1].startswith("[")}


def _stale(line: str, static: set[tuple[str, str]]) -> bool:
    """An IPv4 lease ("expiry mac ip ...") of a MAC or an address the hosts file no longer pairs."""
    fields = line.split()
    return len(fields) > 2 and _MAC.match(fields[1]) is not None and (fields[1], fields[2]) not in static


def _stale_leases(leases: Path, hosts: str) -> bool:
    if not leases.exists():
        return False
    static = _static(hosts)
    return any(_stale(line, static) for line in leases.read_text().splitlines())


def _drop_stale_leases(leases: Path, hosts: str) -> None:
    if not leases.exists():
        return
    static = _static(hosts)
    kept = [line for line in leases.read_text().splitlines() if not _stale(line, static)]
    leases.write_text("".join(f"{line}\n" for line in kept))


def stop(workdir: Path) -> bool:
    pidfile = workdir / "dnsmasq.pid"
    return _proc.stop(pidfile, str(pidfile))
