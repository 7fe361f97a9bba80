"""The Linux dataplane: bridges, taps, DHCP and router namespaces, iptables-nft and nft.

``apply`` makes the host match a ``HostNetworkState`` in one pass (run in a worker thread, one
pass at a time):

1. host prerequisites (br_netfilter, the state dir, the metadata secret);
2. a bridge per network (on the network host, the external network's bridge also gets the
   subnet's gateway address, so that the host reaches floating IPs); a VXLAN device with its
   forwarding entries per network that another host shares (``vxlan.py``); a persistent tap per
   port, plugged in;
3. on the network host, per network with DHCP: its namespace, veth, dnsmasq, and, for subnets without a router, the
   isolated metadata proxy (``dhcp.py``);
4. per router: its namespace, veths, addresses, default route, NAT and metadata proxy
   (``routers.py``);
5. the security group chains, IPv4 and IPv6, and the anti-spoofing table (``firewall.py``);
6. strays: every object of *this installation* that the state no longer names is removed.

One object that cannot be applied never blocks the others: each network, port, DHCP namespace
and router is applied on its own, and a failure is logged with the object's id and reason and
listed in ``ApplyReport.failed`` while the pass goes on.  A port whose values cannot be rendered
into rules is quarantined (its chains drop everything) rather than failing every port's rules.
Only a host that cannot run the dataplane at all (a missing tool, no br_netfilter) fails a pass.

Ownership: every name carries the installation tag (``naming.py``) and is written to
``STATE_DIR/network/owned.json`` *before* the object is created, and removal only ever considers
names that are both tagged and recorded.  A crash between the two steps leaves a recorded name
without an object, which the next pass forgets; never an object that no one will remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from yunstack.compute.driver import Nic
from yunstack.errors import DriverError, DriverMisconfigured
from yunstack.network.dataplane import _cmd, _proc, bridges, dhcp, firewall, metadata, routers, vxlan
from yunstack.network.dataplane.base import ApplyReport, nic_for_port
from yunstack.network.dataplane.metadata_api import ensure_secret
from yunstack.network.dataplane.naming import (
    DHCP_IFNAME,
    Names,
    install_tag,
    router_gateway_ifname,
    router_port_ifname,
)
from yunstack.network.desired import HostNetworkState, NetworkState, PortState, RouterState

log = logging.getLogger(__name__)

BR_NF_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
BR_NF6_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables")
METADATA_IP = "169.254.169.254"


@dataclass
class _Pass:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def attempt(self, what: str, step: Callable[[], None]) -> bool:
        """Run one object's step; a failure is recorded and logged, and the pass goes on."""
        try:
            step()
        except DriverMisconfigured:
            raise  # the host cannot run the dataplane at all: no object would do better
        except (DriverError, OSError, ValueError) as exc:
            log.warning("dataplane: %s not applied: %s", what, exc)
            self.failed.append(f"{what}: {exc}")
            return False
        return True

    def note(self, name: str, change: bool | str, *, existed: bool = True) -> None:
        """Record ``name`` as created (it did not exist) or changed (``change`` says how)."""
        if not change:
            return
        if not existed:
            self.created.append(name)
        else:
            self.changed.append(f"{name} ({change})" if isinstance(change, str) else name)


class LinuxDataplane:
    """The dataplane of one installation (one state directory) on this host."""

    def __init__(self, state_dir: Path, *, metadata_upstream: str, dns_domain: str = "openstacklocal",
                 tag: str | None = None, python: str = sys.executable) -> None:
        self.root = Path(state_dir) / "network"
        self.names = Names(tag or install_tag(Path(state_dir)))
        self.metadata_upstream = metadata_upstream
        self.dns_domain = dns_domain
        self.python = python
        self.secret_file = self.root / "metadata_secret"
        self._lock = threading.Lock()
        self._torn_down = False  # set under the lock by teardown; applies after it do nothing
        self._state: HostNetworkState | None = None
        # What this object loaded into the kernel; empty after a restart, so the first pass
        # rewrites everything (that is the reconcile on agent start).
        self._loaded_filter: dict[int, str] = {}
        self._quarantined: set[str] = set()  # ports the kernel refused rules for (see _load_filter)
        self._refused: dict[str, PortState] = {}  # ... and the values it refused
        self._loaded_bridge_table: str | None = None
        self._loaded_nat: dict[str, str] = {}
        self._forwarding: set[str] = set()

    # -- the protocol ------------------------------------------------------------------------------

    async def apply(self, state: HostNetworkState) -> ApplyReport:
        """Make the host match ``state`` (see the module docstring)."""
        return await asyncio.to_thread(self._apply, state)

    async def teardown(self) -> None:
        """Remove every object of this installation; restore the br_netfilter sysctl if we set it."""
        await asyncio.to_thread(self._teardown)

    def nic_for_port(self, port_id: str) -> Nic:
        """Tap, MAC, bridge and DHCP address of a port of the last applied state."""
        return nic_for_port(self.names, self._state, port_id, self.dns_domain)

    # -- ownership record --------------------------------------------------------------------------

    def _record(self) -> dict[str, list[str]]:
        path = self.root / "owned.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        return {k: list(data.get(k, [])) for k in ("links", "namespaces", "chains", "nft", "globals")}

    def _save(self, record: dict[str, list[str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "owned.json.tmp"
        tmp.write_text(json.dumps({k: sorted(set(v)) for k, v in record.items()}, indent=1))
        tmp.replace(self.root / "owned.json")

    def _own(self, kind: str, *names: str) -> None:
        record = self._record()
        if not set(names) <= set(record[kind]):
            record[kind] += names
            self._save(record)

    def _disown(self, kind: str, *names: str) -> None:
        record = self._record()
        if set(names) & set(record[kind]):
            record[kind] = [n for n in record[kind] if n not in names]
            self._save(record)

    # -- apply -------------------------------------------------------------------------------------

    def _apply(self, state: HostNetworkState) -> ApplyReport:
        started = time.monotonic()
        with self._lock:
            if self._torn_down:
                # A pass that was cancelled (its thread ran on) or fetched its state before the
                # teardown would make again what the teardown removed.
                log.info("dataplane: torn down; a late apply was dropped")
                return ApplyReport()
            p = _Pass()
            self._prepare_host()
            nets = {n.id: n for n in state.networks}
            have = bridges.links()
            have_ns = bridges.namespaces()
            for net in state.networks:
                p.attempt(f"network {net.id}", partial(self._ensure_network, net, state, have, p))
            for port in state.ports:
                port_net = nets.get(port.network_id)
                if port_net is None:
                    log.warning("port %s is on network %s, which is not in the state", port.id,
                                port.network_id)
                    continue
                p.attempt(f"port {port.id}", partial(self._ensure_tap, port.id, port_net, have, p))
            for net in state.networks:
                if state.network_host and dhcp.dhcp_subnets(net):
                    p.attempt(f"dhcp of network {net.id}",
                              partial(self._ensure_dhcp, net, state, have, have_ns, p))
            for router in state.routers:
                p.attempt(f"router {router.id}",
                          partial(self._ensure_router, router, state, nets, have, have_ns, p))
            self._ensure_firewall(state, p)
            self._remove_strays(state, p)
            self._state = state
        report = ApplyReport(created=tuple(p.created), changed=tuple(p.changed), removed=tuple(p.removed),
                             failed=tuple(p.failed), seconds=time.monotonic() - started)
        if not report.noop:
            log.info("dataplane: created %s changed %s removed %s in %.2fs", report.created,
                     report.changed, report.removed, report.seconds)
        return report

    def _ensure_tap(self, port_id: str, net: NetworkState, have: dict[str, bridges.Link], p: _Pass) -> None:
        tap = self.names.tap(port_id)
        self._own("links", tap)
        p.note(f"tap:{tap}", bridges.ensure_tap(tap, self.names.bridge(net.id), net.mtu, have), existed=tap in have)

    def _prepare_host(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ensure_secret(self.secret_file)
        if not BR_NF_SYSCTL.exists():
            _cmd.run(["modprobe", "br_netfilter"], check=False)
        if not BR_NF_SYSCTL.exists():
            raise DriverMisconfigured(detail="br_netfilter is not available: security groups need "
                                             "net.bridge.bridge-nf-call-iptables (modprobe br_netfilter)")
        if BR_NF_SYSCTL.read_text().strip() != "1":
            # Global: every bridge's IPv4 traffic now passes the iptables FORWARD chain.  Remember
            # that we changed it, so that teardown can put it back.
            self._own("globals", "bridge-nf-call-iptables=0")
            BR_NF_SYSCTL.write_text("1")
        if BR_NF6_SYSCTL.read_text().strip() != "1":
            # Likewise for IPv6: bridged IPv6 now passes ip6tables, where the IPv6 rules are.
            self._own("globals", "bridge-nf-call-ip6tables=0")
            BR_NF6_SYSCTL.write_text("1")
        record = self._record()
        if self.names.fwd_chain not in record["chains"] and \
                _cmd.ok(["iptables", "-w", "-n", "-L", self.names.fwd_chain]):
            raise DriverMisconfigured(
                detail=f"chain {self.names.fwd_chain} exists but is not ours: another installation "
                       f"uses tag {self.names.tag!r}; pass a different tag")

    def _ensure_network(self, net: NetworkState, state: HostNetworkState, have: dict[str, bridges.Link],
                        p: _Pass) -> None:
        br = self.names.bridge(net.id)
        self._own("links", br)
        p.note(f"bridge:{br}", bridges.ensure_bridge(br, net.mtu, have), existed=br in have)
        if net.tunnel is not None and state.tunnel_ip:
            # Another host shares this network: its frames cross the underlay in VXLAN.
            dev = self.names.vxlan(net.id)
            self._own("links", dev)
            p.note(f"vxlan:{dev}", vxlan.ensure(dev, br, net.tunnel, state.tunnel_ip, net.mtu, have),
                   existed=dev in have)
            added, removed = vxlan.sync_fdb(dev, net.tunnel.fdb)
            p.note(f"vxlan:{dev}", "fdb" if added or removed else "")
        if net.external and state.network_host:
            # The host-only external network: the host holds the subnet's gateway address, which
            # is how the host reaches floating IPs (and the routers' default gateway).  No NAT to
            # any uplink, no host route changes beyond this connected route.
            wanted = {f"{s.gateway_ip}/{s.cidr.split('/')[1]}" for s in net.subnets
                      if s.ip_version == 4 and s.gateway_ip}
            p.note(f"bridge:{br}", "addresses" if bridges.sync_addresses(br, wanted) else "")

    def _ensure_dhcp(self, net: NetworkState, state: HostNetworkState, have: dict[str, bridges.Link],
                     have_ns: set[str], p: _Pass) -> None:
        ns = self.names.dhcp_ns(net.id)
        self._own("namespaces", ns)
        if bridges.ensure_namespace(ns, have_ns):
            p.created.append(f"netns:{ns}")
            have_ns.add(ns)
        veth = self.names.dhcp_veth(net.id)
        self._own("links", veth)
        p.note(f"veth:{veth}", bridges.ensure_veth(veth, self.names.bridge(net.id), DHCP_IFNAME, ns, net.mtu,
                                                  net.dhcp_mac, have, bridges.links(ns)),
               existed=veth in have)
        workdir = self.root / "dhcp" / net.id
        workdir.mkdir(parents=True, exist_ok=True)  # render looks at its permissions
        config = dhcp.render(net, state, workdir, self.dns_domain)
        wanted = set(config.addresses)
        if config.isolated_cidrs:
            wanted.add(f"{METADATA_IP}/32")
        p.note(f"netns:{ns}", "addresses" if bridges.sync_addresses(DHCP_IFNAME, wanted, ns) else "")
        p.note(f"dnsmasq:{net.id}", dhcp.ensure(config, workdir, ns))
        meta_dir = self.root / "metadata" / f"dhcp-{net.id}"
        if config.isolated_cidrs:
            command = metadata.argv(netns=ns, networks=dict.fromkeys(config.isolated_cidrs, net.id),
                                    upstream=self.metadata_upstream, secret_file=self.secret_file,
                                    pidfile=meta_dir / "proxy.pid", python=self.python)
            p.note(f"metadata:dhcp-{net.id}", metadata.ensure(meta_dir, command))
        elif metadata.stop(meta_dir):
            p.removed.append(f"metadata:dhcp-{net.id}")

    def _ensure_router(self, router: RouterState, state: HostNetworkState, nets: dict[str, NetworkState],
                       have: dict[str, bridges.Link], have_ns: set[str], p: _Pass) -> None:
        ns = self.names.router_ns(router.id)
        self._own("namespaces", ns)
        fresh = bridges.ensure_namespace(ns, have_ns)
        if fresh:
            p.created.append(f"netns:{ns}")
            have_ns.add(ns)
            self._loaded_nat.pop(router.id, None)
        if router.id not in self._forwarding or fresh:
            # IPv6 is routed between internal subnets as it is (no NAT66, no IPv6 gateway).
            _cmd.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], netns=ns)
            self._forwarding.add(router.id)
        inner = bridges.links(ns)
        wanted_inner = {"lo"}
        for iface in router.interfaces:
            net = nets.get(iface.network_id)
            if net is None:
                continue
            host_end, peer = self.names.router_veth(iface.port_id), router_port_ifname(iface.port_id)
            wanted_inner.add(peer)
            self._own("links", host_end)
            p.note(f"veth:{host_end}", bridges.ensure_veth(host_end, self.names.bridge(net.id), peer, ns,
                                                           net.mtu, iface.mac_address, have, inner),
                   existed=host_end in have)
            changed = bridges.sync_addresses(peer, {f"{iface.ip_address}/{iface.prefixlen}"}, ns)
            p.note(f"router:{router.id}", "addresses" if changed else "")
        ext = routers.gateway_subnet(router, state)
        if ext is not None and router.gateway_network_id in nets:
            gw_net = nets[router.gateway_network_id]
            host_end, peer = self.names.gateway_veth(router.id), router_gateway_ifname(router.id)
            wanted_inner.add(peer)
            self._own("links", host_end)
            p.note(f"veth:{host_end}", bridges.ensure_veth(host_end, self.names.bridge(gw_net.id), peer, ns,
                                                           gw_net.mtu, router.gateway_mac, have, inner),
                   existed=host_end in have)
            changed = bridges.sync_addresses(peer, routers.gateway_addresses(router), ns)
            p.note(f"router:{router.id}", "addresses" if changed else "")
            if ext.gateway_ip:
                _cmd.run(["ip", "route", "replace", "default", "via", ext.gateway_ip, "dev", peer], netns=ns)
        if routers.sync_routes(router, ns):
            p.note(f"router:{router.id}", "routes")
        for name in sorted(set(inner) - wanted_inner):
            if name.startswith(("ysqr", "ysqg")):
                bridges.delete(name, ns)
                p.removed.append(f"veth:{ns}/{name}")
        nat = routers.render_nat(router)
        if self._loaded_nat.get(router.id) != nat:
            _cmd.run(["iptables-restore", "-w"], netns=ns, input=nat)
            p.note(f"router:{router.id}", "nat")
            self._loaded_nat[router.id] = nat
        networks = routers.metadata_networks(router)
        meta_dir = self.root / "metadata" / f"r-{router.id}"
        if networks:
            bridges.sync_addresses("lo", {"127.0.0.1/8", f"{METADATA_IP}/32"}, ns)
            command = metadata.argv(netns=ns, networks=networks, upstream=self.metadata_upstream,
                                    secret_file=self.secret_file, pidfile=meta_dir / "proxy.pid",
                                    python=self.python)
            p.note(f"metadata:r-{router.id}", metadata.ensure(meta_dir, command))
        elif metadata.stop(meta_dir):
            p.removed.append(f"metadata:r-{router.id}")

    def _ensure_firewall(self, state: HostNetworkState, p: _Pass) -> None:
        if not state.networks:
            # No bridge of ours is left, so nothing needs hooking: the base chains, the hook rules
            # and the nft table go with the last network rather than waiting for a teardown.
            self._remove_firewall(p)
            return
        for port_id, reason in sorted(firewall.problems(state).items()):
            log.warning("dataplane: port %s quarantined (all its traffic dropped): %s", port_id, reason)
            p.failed.append(f"port {port_id}: {reason} (quarantined)")
        # A refused port is tried again once its values change (or it is gone).
        ports = {port.id: port for port in firewall.secured_ports(state)}
        self._quarantined = {i for i in self._quarantined if i in ports and self._refused.get(i) == ports[i]}
        record = self._record()
        wanted = firewall.chains(self.names, state)
        obsolete = set(record["chains"]) - set(wanted)
        for family in (4, 6):
            self._load_filter(state, family, obsolete, wanted, p)
        if obsolete:
            for family in (4, 6):
                _cmd.run([f"{firewall.TABLES[family]}-restore", "-w", "--noflush"],
                         input=firewall.render_delete(obsolete))
            self._disown("chains", *obsolete)
            p.removed += [f"chain:{c}" for c in sorted(obsolete)]
        for family in (4, 6):
            tool = firewall.TABLES[family]
            for chain, rule in firewall.hook_rules(self.names):
                if not _cmd.ok([tool, "-w", "-C", chain, *rule]):
                    _cmd.run([tool, "-w", "-I", chain, "1", *rule])
                    p.created.append(f"hook:{chain}" if family == 4 else f"hook6:{chain}")
        table = firewall.render_bridge_table(self.names, state, self._quarantined)
        if table != self._loaded_bridge_table:
            self._own("nft", self.names.nft_table)
            _cmd.run(["nft", "-f", "-"], input=table)
            self._loaded_bridge_table = table
            p.note(f"nft:{self.names.nft_table}", "rules")

    def _load_filter(self, state: HostNetworkState, family: int, obsolete: set[str], wanted: list[str],
                     p: _Pass) -> None:
        """Load one family's chains; a port whose rules the kernel refuses is quarantined, not the batch."""
        text = firewall.render_filter(self.names, state, obsolete, family=family, quarantined=self._quarantined)
        if text == self._loaded_filter.get(family) and not obsolete:
            return
        self._own("chains", *wanted)
        marker = "filter-table" if family == 4 else "filter6-table"
        if marker not in self._record()["globals"] and \
                not _cmd.ok(["nft", "list", "table", "ip" if family == 4 else "ip6", "filter"]):
            self._own("globals", marker)  # iptables-nft is about to create it
        restore = [f"{firewall.TABLES[family]}-restore", "-w", "--noflush"]
        try:
            _cmd.run(restore, input=text)
        except _cmd.CommandFailed:
            refused = self._refused_ports(state, family, restore)
            if not refused:
                raise
            text = firewall.render_filter(self.names, state, obsolete, family=family,
                                          quarantined=self._quarantined)
            _cmd.run(restore, input=text)
        p.note("security-groups" if family == 4 else "security-groups-v6", "rules")
        self._loaded_filter[family] = firewall.render_filter(self.names, state, family=family,
                                                             quarantined=self._quarantined)

    def _refused_ports(self, state: HostNetworkState, family: int, restore: list[str]) -> set[str]:
        """Test each port's chains alone; quarantine (and report) the ones the kernel refuses."""
        refused: set[str] = set()
        skip = self._quarantined | set(firewall.problems(state))
        for port in firewall.secured_ports(state):
            if port.id in skip:
                continue
            try:
                _cmd.run([*restore, "--test"], input=firewall.render_port(self.names, state, port, family))
            except _cmd.CommandFailed as exc:
                log.warning("dataplane: port %s quarantined (all its traffic dropped): %s", port.id, exc)
                refused.add(port.id)
                self._refused[port.id] = port
        self._quarantined |= refused
        return refused

    # -- strays ------------------------------------------------------------------------------------

    def _desired(self, state: HostNetworkState) -> tuple[set[str], set[str], set[str]]:
        """(links, namespaces, daemon work dirs) that ``state`` needs."""
        n = self.names
        nets = {net.id: net for net in state.networks}
        links = {n.bridge(i) for i in nets}
        links |= {n.tap(p.id) for p in state.ports if p.network_id in nets}
        spaces: set[str] = set()
        dirs: set[str] = set()
        links |= {n.vxlan(i) for i, net in nets.items() if net.tunnel is not None and state.tunnel_ip}
        for net in state.networks:
            if state.network_host and dhcp.dhcp_subnets(net):
                links.add(n.dhcp_veth(net.id))
                spaces.add(n.dhcp_ns(net.id))
                dirs |= {f"dhcp/{net.id}", f"metadata/dhcp-{net.id}"}
        for r in state.routers:
            spaces.add(n.router_ns(r.id))
            dirs.add(f"metadata/r-{r.id}")
            links |= {n.router_veth(i.port_id) for i in r.interfaces if i.network_id in nets}
            if routers.gateway_subnet(r, state) is not None:
                links.add(n.gateway_veth(r.id))
        return links, spaces, dirs

    def _remove_strays(self, state: HostNetworkState, p: _Pass) -> None:
        links, spaces, dirs = self._desired(state)
        self._stop_daemons(keep=dirs, p=p)
        record = self._record()
        present_ns = bridges.namespaces()
        for ns in sorted(set(record["namespaces"]) - spaces):
            if ns.startswith(self.names.nsprefix) and ns in present_ns:
                bridges.delete_namespace(ns)
                p.removed.append(f"netns:{ns}")
            self._disown("namespaces", ns)
        self._loaded_nat = {k: v for k, v in self._loaded_nat.items() if self.names.router_ns(k) in spaces}
        present = bridges.links()
        # Taps and veths first, bridges last (a bridge goes quietly once it has no ports).
        for name in sorted(set(record["links"]) - links, key=lambda x: x[len(self.names.ifprefix)] == "b"):
            if name.startswith(self.names.ifprefix) and name in present:
                bridges.delete(name)
                p.removed.append(f"link:{name}")
            self._disown("links", name)

    def _stop_daemons(self, keep: set[str], p: _Pass | None) -> None:
        for kind, stop in (("dhcp", dhcp.stop), ("metadata", metadata.stop)):
            base = self.root / kind
            for workdir in sorted(base.iterdir()) if base.is_dir() else []:
                if f"{kind}/{workdir.name}" in keep:
                    continue
                if stop(workdir) and p is not None:
                    p.removed.append(f"{'dnsmasq' if kind == 'dhcp' else 'metadata'}:{workdir.name}")
                shutil.rmtree(workdir, ignore_errors=True)

    # -- teardown ----------------------------------------------------------------------------------

    def _teardown(self) -> None:
        with self._lock:
            self._torn_down = True
            self._stop_daemons(keep=set(), p=None)
            self._remove_firewall(None)
            record = self._record()
            for ns in record["namespaces"]:
                if ns.startswith(self.names.nsprefix):
                    bridges.delete_namespace(ns)
                self._disown("namespaces", ns)
            present = bridges.links()
            for name in sorted(record["links"], key=lambda x: x[len(self.names.ifprefix)] == "b"):
                if name.startswith(self.names.ifprefix) and name in present:
                    bridges.delete(name)
                self._disown("links", name)
            self._restore_globals(record["globals"])
            self._state = None
            self._loaded_nat.clear()
            self._forwarding.clear()

    def _remove_firewall(self, p: _Pass | None) -> None:
        """Remove the hook rules, every recorded chain and the nft table (all of them, ours only)."""
        record = self._record()
        chains = set(record["chains"])
        for family in (4, 6):
            tool = firewall.TABLES[family]
            for chain, rule in firewall.hook_rules(self.names):
                while _cmd.ok([tool, "-w", "-D", chain, *rule]):
                    if p is not None:
                        p.removed.append(f"hook:{chain}" if family == 4 else f"hook6:{chain}")
            if chains:
                declared = "*filter\n" + "".join(f":{c} - [0:0]\n" for c in sorted(chains)) + "COMMIT\n"
                _cmd.run([f"{tool}-restore", "-w", "--noflush"], input=declared, check=False)
                _cmd.run([f"{tool}-restore", "-w", "--noflush"], input=firewall.render_delete(chains), check=False)
        if chains:
            self._disown("chains", *chains)
            if p is not None:
                p.removed += [f"chain:{c}" for c in sorted(chains)]
        for table in record["nft"]:
            _cmd.run(["nft", "delete", "table", "bridge", table], check=False)
            self._disown("nft", table)
            if p is not None:
                p.removed.append(f"nft:{table}")
        self._loaded_filter = {}
        self._loaded_bridge_table = None

    def _restore_globals(self, changed: list[str]) -> None:
        tables = _cmd.run(["nft", "list", "tables", "bridge"], check=False)
        others = [t for t in tables.split() if t.startswith("yunstack_") and t != self.names.nft_table]
        if "filter-table" in changed and _empty_filter_table("ip"):
            _cmd.run(["nft", "delete", "table", "ip", "filter"], check=False)
        if "filter6-table" in changed and _empty_filter_table("ip6"):
            _cmd.run(["nft", "delete", "table", "ip6", "filter"], check=False)
        for sysctl, path in (("bridge-nf-call-iptables", BR_NF_SYSCTL), ("bridge-nf-call-ip6tables", BR_NF6_SYSCTL)):
            if f"{sysctl}=0" not in changed:
                continue
            if others:
                log.info("leaving %s=1: other installations (%s) need it", sysctl, others)
            else:
                with contextlib.suppress(OSError):
                    path.write_text("0")
        if changed:
            self._disown("globals", *changed)
        with contextlib.suppress(OSError):
            os.rmdir(self.root / "dhcp")
            os.rmdir(self.root / "metadata")


def _empty_filter_table(family: str) -> bool:
    """True when ``table <family> filter`` holds no rule and no chain but the empty built-in ones."""
    out = _cmd.run(["nft", "-j", "list", "table", family, "filter"], check=False)
    if not out.strip():
        return False
    items = json.loads(out).get("nftables", [])
    rules = [i for i in items if "rule" in i]
    extra = [i for i in items if "chain" in i and "hook" not in i["chain"]]
    policies = {i["chain"].get("policy", "accept") for i in items if "chain" in i and "hook" in i["chain"]}
    return not rules and not extra and policies <= {"accept"}


# Keep the daemon finder importable for tests that look for strays.
find_processes = _proc.find
