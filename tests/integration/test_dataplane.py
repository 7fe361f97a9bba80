"""The Linux dataplane with real QEMU guests: DHCP, security groups, floating IPs, metadata, cleanup.

Guests are the tiny image (busybox); everything they do after boot comes from user_data, and
the tests read the results from their serial consoles.  Every host object is created under this
test's own state directory (its own installation tag) and removed in the finalizer.  Addresses:
10.97.x.0/24 test subnets and a host-only external network 172.24.97.0/24 (not the default
172.24.4.0/24, which a `yun up` on the same machine may own).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from tests.cloud import names_rule
from yunstack.api.metadata import make_metadata_router
from yunstack.compute.driver import ConfigDrive, InstanceSpec, root_disk
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, QemuConfig, ServerConfig
from yunstack.image.tiny import build_tiny_image
from yunstack.network.dataplane import _proc, firewall
from yunstack.network.dataplane.linux import LinuxDataplane
from yunstack.network.dataplane.metadata_api import InstanceMetadata, ensure_secret
from yunstack.network.desired import (
    FixedIp,
    FloatingIpState,
    HostNetworkState,
    NetworkState,
    PortState,
    RouterInterface,
    RouterState,
    SecurityGroupRule,
    SecurityGroupState,
    SubnetState,
)

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 90.0
READY = re.compile(r"YUNSTACK-READY hostname=\S+ ip=(\S+)")


def _id() -> str:
    return str(uuid.uuid4())


# -- building states by hand ---------------------------------------------------------------------


def network(cidr: str, *, dhcp: bool = True, external: bool = False, vni: int = 100) -> NetworkState:
    net_id, subnet_id = _id(), _id()
    prefix = cidr.rsplit(".", 1)[0]
    subnet = SubnetState(id=subnet_id, network_id=net_id, cidr=cidr, ip_version=4,
                         gateway_ip=f"{prefix}.1", enable_dhcp=dhcp,
                         dhcp_ip=f"{prefix}.2" if dhcp else None)
    return NetworkState(id=net_id, name=f"net-{prefix}", mtu=1500, external=external,
                        subnets=(subnet,), segmentation_id=vni,
                        dhcp_mac=f"fa:16:3e:{vni % 256:02x}:00:02" if dhcp else None)


def port(net: NetworkState, host_octet: int, name: str, *groups: str, secure: bool = True) -> PortState:
    subnet = net.subnets[0]
    ip = subnet.cidr.rsplit(".", 1)[0] + f".{host_octet}"
    return PortState(id=_id(), network_id=net.id, mac_address=f"fa:16:3e:{net.segmentation_id % 256:02x}:01:"
                     f"{host_octet:02x}", fixed_ips=(FixedIp(subnet_id=subnet.id, ip_address=ip),),
                     device_id=_id(), device_owner="compute:nova", hostname=name, tap="unused",
                     port_security_enabled=secure, security_group_ids=groups)


def with_slaac(net: NetworkState, prefix: str) -> NetworkState:
    """``net`` plus an IPv6 SLAAC subnet (``prefix``::/64, a fd00::/8 ULA of our own)."""
    v6 = SubnetState(id=_id(), network_id=net.id, cidr=f"{prefix}::/64", ip_version=6, gateway_ip=f"{prefix}::1",
                     enable_dhcp=True, dhcp_ip=f"{prefix}::2", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    return replace(net, subnets=(*net.subnets, v6))


def slaac_ip(net: NetworkState, p: PortState) -> str:
    """The address the guest makes itself (and that IPAM gives a port on a SLAAC subnet)."""
    return firewall.eui64(net.subnets[1].cidr, p.mac_address)


def ip_of(p: PortState) -> str:
    return p.fixed_ips[0].ip_address


EGRESS_ANY = SecurityGroupRule(id="egress-any", direction="egress", ethertype="IPv4", protocol=None)
EGRESS_ANY6 = SecurityGroupRule(id="egress-any6", direction="egress", ethertype="IPv6", protocol=None)
INGRESS_ICMP6 = SecurityGroupRule(id="ingress-icmp6", direction="ingress", ethertype="IPv6", protocol="ipv6-icmp")
INGRESS_ICMP = SecurityGroupRule(id="ingress-icmp", direction="ingress", ethertype="IPv4", protocol="icmp")
INGRESS_SSH = SecurityGroupRule(id="ingress-ssh", direction="ingress", ethertype="IPv4", protocol="tcp",
                                port_range_min=22, port_range_max=22)


def router(net: NetworkState, ext: NetworkState | None, *fips: tuple[PortState, str]) -> RouterState:
    subnet = net.subnets[0]
    iface = RouterInterface(port_id=_id(), subnet_id=subnet.id, network_id=net.id,
                            ip_address=str(subnet.gateway_ip), prefixlen=int(subnet.cidr.split("/")[1]),
                            mac_address=f"fa:16:3e:{net.segmentation_id % 256:02x}:00:01")
    return RouterState(
        id=_id(), gateway_network_id=ext.id if ext else None, gateway_ip="172.24.97.10" if ext else None,
        gateway_prefixlen=24 if ext else None, gateway_mac="fa:16:3e:ee:00:10" if ext else None,
        enable_snat=True, interfaces=(iface,),
        floating_ips=tuple(FloatingIpState(id=_id(), floating_ip_address=fip, fixed_ip_address=ip_of(p),
                                           port_id=p.id) for p, fip in fips))


# -- the harness ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_image(tmp_path_factory.mktemp("tiny-image"))


class MetadataServer:
    """The API side of the metadata service on 127.0.0.1, answering from a lookup table."""

    def __init__(self, secret: bytes) -> None:
        self.table: dict[tuple[str, str], InstanceMetadata] = {}
        self.requests: list[tuple[str, str]] = []
        app = FastAPI()
        app.include_router(make_metadata_router(self.lookup, secret))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def lookup(self, network_id: str, address: str) -> InstanceMetadata | None:
        self.requests.append((network_id, address))
        return self.table.get((network_id, address))

    def __enter__(self) -> MetadataServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "metadata test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Cloud:
    root: Path
    dataplane: LinuxDataplane
    driver: QemuDriver
    image: Path
    metadata: MetadataServer
    vms: dict[str, InstanceSpec] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    async def boot(self, p: PortState, user_data: str, memory_mib: int = 128, *, config_drive: bool = True) -> str:
        instance_id = p.device_id
        drive = ConfigDrive(meta_data={"uuid": instance_id, "name": p.hostname, "hostname": p.hostname},
                            user_data=user_data.encode())
        spec = InstanceSpec(
            id=instance_id, name=p.hostname, hostname=p.hostname, vcpus=1, memory_mib=memory_mib,
            disks=root_disk(self.image), nics=(self.dataplane.nic_for_port(p.id),),
            config_drive=drive if config_drive else None)
        self.vms[p.hostname] = spec
        self.started[p.hostname] = time.monotonic()
        await self.driver.spawn(spec)
        return instance_id

    async def console(self, name: str) -> str:
        return await self.driver.console_output(self.vms[name].id)

    async def wait_for(self, name: str, pattern: str, timeout: float = BOOT_TIMEOUT, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = await self.console(name)
            found = re.findall(pattern, text)
            if len(found) >= count:
                return text
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-25:])
                raise AssertionError(f"{name}: no {pattern!r} x{count} within {timeout}s; console tail:\n{tail}")
            await asyncio.sleep(0.25)


def our_objects(dp: LinuxDataplane) -> dict[str, list[str]]:
    """Everything on the host that carries this installation's names."""
    n = dp.names
    links = [line.split(":")[1].strip().split("@")[0] for line in
             subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()]
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    chains = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    chains += subprocess.run(["ip6tables-save"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {
        "links": sorted(x for x in links if x.startswith(n.ifprefix)),
        "namespaces": sorted(x for x in spaces if x.startswith(n.nsprefix)),
        "iptables": sorted(line for line in chains.splitlines() if names_rule(n, line)),
        "nft": sorted(line for line in tables.splitlines() if n.nft_table in line),
        "processes": sorted(str(pid) for pid in _proc.find(str(dp.root), "dnsmasq")
                            + _proc.find(str(dp.root), "metadata_proxy")),
    }


def _kill_guests(root: Path) -> None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _proc.cmdline(int(entry.name))
            if "qemu-system" in cmd and str(root) in cmd:
                with_suppress_kill(int(entry.name))


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: QMP socket paths must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ysdp-", dir="/tmp"))
    yield path
    _kill_guests(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def cloud(root: Path, tiny_image: Path) -> AsyncIterator[Cloud]:
    secret = ensure_secret(root / "network" / "metadata_secret")
    with MetadataServer(secret) as md:
        dp = LinuxDataplane(root, metadata_upstream=f"http://127.0.0.1:{md.port}/metadata")
        config = Config(server=ServerConfig(state_dir=str(root)), qemu=QemuConfig(accel="tcg"))
        driver = QemuDriver(config)
        await driver.init_host()
        c = Cloud(root=root, dataplane=dp, driver=driver, image=tiny_image, metadata=md)
        try:
            yield c
        finally:
            for spec in c.vms.values():
                try:
                    await driver.destroy(spec.id)
                except Exception:  # the finalizer must reach the teardown
                    pass
            _kill_guests(root)
            await dp.teardown()
            assert all(not v for v in our_objects(dp).values()), our_objects(dp)


# -- the tests -----------------------------------------------------------------------------------

PING_UNTIL_OK = """#!/bin/sh
t0=$(cut -d' ' -f1 /proc/uptime)
udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true > /dev/null 2>&1
t1=$(cut -d' ' -f1 /proc/uptime)
echo "DHCP-EXCHANGE start=$t0 end=$t1"
i=0
while [ $i -lt 90 ] && ! ping -c 1 -W 1 {other} > /dev/null 2>&1; do i=$((i + 1)); done
ping -c 3 {other} > /tmp/ping.out 2>&1
echo "PING-RESULT rc=$? $(tail -n 1 /tmp/ping.out)"
"""


async def test_two_servers_get_their_addresses_from_dhcp_and_ping_each_other(cloud: Cloud) -> None:
    net = network("10.97.0.0/24", vni=97)
    group = SecurityGroupState(id="sg-web", rules=(EGRESS_ANY, INGRESS_ICMP))
    vm1, vm2 = port(net, 11, "vm1", "sg-web"), port(net, 12, "vm2", "sg-web")
    state = HostNetworkState(host="h", networks=(net,), ports=(vm1, vm2), security_groups=(group,))
    report = await cloud.dataplane.apply(state)
    assert report.created
    again = await cloud.dataplane.apply(state)
    assert again.noop, again

    await cloud.boot(vm1, PING_UNTIL_OK.format(other=ip_of(vm2)))
    await cloud.boot(vm2, PING_UNTIL_OK.format(other=ip_of(vm1)))
    for vm, other in ((vm1, vm2), (vm2, vm1)):
        text = await cloud.wait_for(vm.hostname, r"YUNSTACK-READY")
        ready = READY.search(text)
        assert ready is not None and ready.group(1) == ip_of(vm), text[-2000:]
        print(f"{vm.hostname}: boot to READY {time.monotonic() - cloud.started[vm.hostname]:.1f}s")
        result = re.search(r"PING-RESULT rc=(\d+) (.*)", text)
        assert result is not None and result.group(1) == "0", text[-2000:]
        print(f"{vm.hostname} -> {ip_of(other)}: {result.group(2)}")
        exchange = re.search(r"DHCP-EXCHANGE start=([\d.]+) end=([\d.]+)", text)
        assert exchange is not None
        print(f"{vm.hostname}: DHCP exchange {float(exchange.group(2)) - float(exchange.group(1)):.2f}s")
    # dnsmasq knows the instance names (DNS for the instances).
    answer = subprocess.run(["ip", "netns", "exec", cloud.dataplane.names.dhcp_ns(net.id),
                             "dnsmasq", "--test"], capture_output=True, text=True)
    assert answer.returncode == 0
    hosts = (cloud.dataplane.root / "dhcp" / net.id / "addn_hosts").read_text()
    assert f"{ip_of(vm1)}\tvm1.openstacklocal vm1" in hosts


PING_FOREVER = """#!/bin/sh
( while true; do
    if ping -c 1 -W 1 {other} > /dev/null 2>&1; then echo PING-OK; else echo PING-FAIL; fi
    sleep 1
  done ) &
"""


async def test_a_security_group_without_icmp_blocks_ping_until_the_rule_is_added(cloud: Cloud) -> None:
    net = network("10.97.0.0/24", vni=98)
    client_group = SecurityGroupState(id="sg-client", rules=(EGRESS_ANY,))
    closed = SecurityGroupState(id="sg-server", rules=(EGRESS_ANY, INGRESS_SSH))
    client, server = port(net, 21, "client", "sg-client"), port(net, 22, "server", "sg-server")
    state = HostNetworkState(host="h", networks=(net,), ports=(client, server),
                             security_groups=(client_group, closed))
    await cloud.dataplane.apply(state)
    await cloud.boot(server, "#!/bin/sh\ntrue\n")
    await cloud.boot(client, PING_FOREVER.format(other=ip_of(server)))
    await cloud.wait_for("server", r"YUNSTACK-READY")
    await cloud.wait_for("client", r"YUNSTACK-READY")
    text = await cloud.wait_for("client", r"PING-FAIL", count=4, timeout=60)
    assert "PING-OK" not in text, "ICMP reached a port whose security group does not allow it"

    opened = replace(closed, rules=(*closed.rules, INGRESS_ICMP))
    report = await cloud.dataplane.apply(replace(state, security_groups=(client_group, opened)))
    assert any("security-groups" in c for c in report.changed), report
    changed_at = time.monotonic()
    await cloud.wait_for("client", r"PING-OK", timeout=30)
    print(f"ping allowed {time.monotonic() - changed_at:.1f}s after the rule was applied")


async def test_a_floating_ip_makes_a_server_reachable_from_the_host(cloud: Cloud) -> None:
    ext = network("172.24.97.0/24", dhcp=False, external=True, vni=99)
    net = network("10.97.1.0/24", vni=101)
    group = SecurityGroupState(id="sg-icmp", rules=(EGRESS_ANY, INGRESS_ICMP))
    vm = port(net, 11, "fipvm", "sg-icmp")
    r = router(net, ext, (vm, "172.24.97.20"))
    state = HostNetworkState(host="h", networks=(ext, net), ports=(vm,), security_groups=(group,), routers=(r,))
    await cloud.dataplane.apply(state)
    # The guest reaches the host through the router's SNAT (the host sees the floating address).
    await cloud.boot(vm, "#!/bin/sh\nping -c 2 -W 2 172.24.97.1 > /tmp/p 2>&1; echo \"HOST-PING rc=$?\"\n")
    text = await cloud.wait_for("fipvm", r"YUNSTACK-READY")
    assert "HOST-PING rc=0" in text, text[-1500:]
    ping = None
    for _ in range(5):
        ping = subprocess.run(["busybox", "ping", "-c", "2", "-W", "2", "172.24.97.20"],
                              capture_output=True, text=True)
        if ping.returncode == 0:
            break
    assert ping is not None and ping.returncode == 0, ping.stdout if ping else None
    print("host -> floating IP:", ping.stdout.strip().splitlines()[-1])

    # Without the floating IP the server is unreachable again.
    await cloud.dataplane.apply(replace(state, routers=(replace(r, floating_ips=()),)))
    gone = subprocess.run(["busybox", "ping", "-c", "1", "-W", "1", "172.24.97.20"], capture_output=True)
    assert gone.returncode != 0


# busybox wget of Debian's busybox-static 1.35 segfaults when given -T (on the host too); these speak HTTP
# with nc, the tiny image's own HTTP metadata uses `timeout 5 wget` instead.
FETCH_METADATA = """#!/bin/sh
{routes}
fetch() {{
    printf 'GET %s HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n' "$1" | nc -w 3 169.254.169.254 80 > /tmp/resp
    head -n 1 /tmp/resp | grep -q ' 200 ' && awk 'body {{ print }} /^\\r?$/ {{ body = 1 }}' /tmp/resp
}}
get() {{
    i=0
    until fetch "$1" > /tmp/body; do
        i=$((i + 1)); [ $i -ge 20 ] && break; sleep 1
    done
    cat /tmp/body
}}
echo "MD-BEGIN $(get /openstack/latest/meta_data.json) MD-END"
echo "EC2-ID $(get /latest/meta-data/instance-id) EC2-END"
"""

# The tiny guest asks for option 121 and installs its routes (the metadata route on an isolated
# network); print them so the test can see where they came from.
SHOW_ROUTES = """echo "ROUTES $(ip -4 route | tr '\\n' ';')"
"""


async def test_metadata_answers_each_server_with_its_own_data_only(cloud: Cloud) -> None:
    routed = network("10.97.2.0/24", vni=102)
    isolated = network("10.97.3.0/24", vni=103)
    group = SecurityGroupState(id="sg-md", rules=(EGRESS_ANY,))
    vm1, vm2 = port(routed, 11, "mdvm1", "sg-md"), port(routed, 12, "mdvm2", "sg-md")
    vm3 = port(isolated, 13, "mdvm3", "sg-md")
    r = router(routed, None)
    state = HostNetworkState(host="h", networks=(routed, isolated), ports=(vm1, vm2, vm3),
                             security_groups=(group,), routers=(r,))
    await cloud.dataplane.apply(state)
    for vm, net in ((vm1, routed), (vm2, routed), (vm3, isolated)):
        cloud.metadata.table[(net.id, ip_of(vm))] = InstanceMetadata(
            uuid=vm.device_id, name=vm.hostname, hostname=f"{vm.hostname}.example", local_ipv4=ip_of(vm))
    for vm in (vm1, vm2):
        await cloud.boot(vm, FETCH_METADATA.format(routes=""))
    await cloud.boot(vm3, FETCH_METADATA.format(routes=SHOW_ROUTES))
    everyone = {vm.device_id for vm in (vm1, vm2, vm3)}
    for vm in (vm1, vm2, vm3):
        text = await cloud.wait_for(vm.hostname, r"YUNSTACK-READY")
        md = re.search(r"MD-BEGIN (.*) MD-END", text)
        assert md is not None and vm.device_id in md.group(1), text[-1500:]
        assert f'"{vm.hostname}.example"' in md.group(1)
        assert not any(other in md.group(1) for other in everyone - {vm.device_id})
        assert f"EC2-ID {vm.device_id} EC2-END" in text, re.findall(r"EC2-ID.*", text)
    routes = re.search(r"ROUTES (.*)", await cloud.console("mdvm3"))
    assert routes is not None, "no ROUTES line"
    assert "169.254.169.254 via 10.97.3.2" in routes.group(1) and "default via 10.97.3.1" in routes.group(1), \
        routes.group(1)
    assert {(routed.id, ip_of(vm1)), (routed.id, ip_of(vm2)), (isolated.id, ip_of(vm3))} <= set(
        cloud.metadata.requests)


async def test_teardown_leaves_nothing_of_ours_and_never_touches_another_installation(root: Path) -> None:
    ext = network("172.24.97.0/24", dhcp=False, external=True, vni=104)
    net = network("10.97.4.0/24", vni=105)
    group = SecurityGroupState(id="sg", rules=(EGRESS_ANY, INGRESS_ICMP))
    vm, open_vm = port(net, 11, "a", "sg"), port(net, 12, "b", secure=False)
    full = HostNetworkState(host="h", networks=(ext, net), ports=(vm, open_vm), security_groups=(group,),
                            routers=(router(net, ext, (vm, "172.24.97.21")),))
    dp = LinuxDataplane(root / "one", metadata_upstream="http://127.0.0.1:9/metadata")
    other_net = network("10.97.5.0/24", vni=106)
    other = LinuxDataplane(root / "two", metadata_upstream="http://127.0.0.1:9/metadata",
                           tag="zz" if dp.names.tag != "zz" else "zy")
    try:
        await other.apply(HostNetworkState(host="h", networks=(other_net,)))
        before_other = our_objects(other)
        await dp.apply(full)
        objects = our_objects(dp)
        # 2 bridges, 2 taps, the DHCP veth, the router's interface and gateway veths
        assert len(objects["links"]) == 7, objects
        assert len(objects["namespaces"]) == 2 and len(objects["processes"]) == 2, objects
        # A smaller state removes what it no longer names.
        report = await dp.apply(replace(full, ports=(open_vm,), routers=()))
        assert any(x.startswith("netns:") for x in report.removed), report
        objects = our_objects(dp)
        assert dp.names.tap(vm.id) not in objects["links"] and len(objects["namespaces"]) == 1
        assert not any(dp.names.port_chains(vm.id)[0] in line for line in objects["iptables"])
        await dp.teardown()
        assert all(not v for v in our_objects(dp).values()), our_objects(dp)
        assert our_objects(other) == before_other  # the other installation is untouched
    finally:
        await dp.teardown()
        await other.teardown()
    assert all(not v for v in our_objects(other).values()), our_objects(other)


async def test_an_apply_that_arrives_after_the_teardown_makes_nothing_again(root: Path) -> None:
    # The attack is the shutdown race: a reconcile pass that fetched its state before the agent's
    # teardown (or whose awaiting task was cancelled while its thread ran on) applies it after.
    net = network("10.97.10.0/24", vni=111)
    state = HostNetworkState(host="h", networks=(net,))
    dp = LinuxDataplane(root / "late", metadata_upstream="http://127.0.0.1:9/metadata")
    try:
        await dp.apply(state)
        assert our_objects(dp)["namespaces"] and our_objects(dp)["processes"], our_objects(dp)
        await dp.teardown()
        late = await dp.apply(state)
        assert late.noop, late
        assert all(not v for v in our_objects(dp).values()), our_objects(dp)
    finally:
        await dp.teardown()


# -- IPv6, HTTP metadata and isolation -----------------------------------------------------------

# The guest's READY line waits only 1 s for SLAAC (an IPv4-only guest should not pay more); under a
# loaded TCG host the RA can come later, so the script names its address once the kernel has one.
PING6_FOREVER = """#!/bin/sh
( i=0
  while [ $i -lt 300 ]; do
    addr=$(ip -6 -o addr show dev eth0 scope global | awk '{{ split($4, a, "/"); print a[1] }}' | tr '\n' ' ')
    [ -n "$addr" ] && break
    usleep 100000
    i=$((i + 1))
  done
  echo "ADDR6 ${{addr:-none}}END"
  while true; do
    if ping6 -c 1 -W 1 {other} > /dev/null 2>&1; then echo PING6-OK; else echo PING6-FAIL; fi
    sleep 1
  done ) &
"""
ADDR6 = re.compile(r"ADDR6 (.+?) ?END")


async def test_two_servers_on_a_slaac_subnet_ping6_each_other_once_a_group_allows_icmpv6(cloud: Cloud) -> None:
    net = with_slaac(network("10.97.6.0/24", vni=107), "fd00:97:6")
    closed = SecurityGroupState(id="sg-v6", rules=(EGRESS_ANY, EGRESS_ANY6))
    a, b = port(net, 11, "v6a", "sg-v6"), port(net, 12, "v6b", "sg-v6")
    a, b = (replace(p, fixed_ips=(*p.fixed_ips, FixedIp(subnet_id=net.subnets[1].id, ip_address=slaac_ip(net, p))))
            for p in (a, b))
    state = HostNetworkState(host="h", networks=(net,), ports=(a, b), security_groups=(closed,))
    report = await cloud.dataplane.apply(state)
    assert not report.failed, report
    await cloud.boot(b, PING6_FOREVER.format(other=slaac_ip(net, a)))
    await cloud.boot(a, PING6_FOREVER.format(other=slaac_ip(net, b)))
    for vm in (a, b):
        text = await cloud.wait_for(vm.hostname, r"ADDR6 .+?END")
        ready = ADDR6.search(text)
        assert ready is not None and slaac_ip(net, vm) in ready.group(1).split(), text[-1500:]
        print(f"{vm.hostname}: SLAAC address {ready.group(1)}")
    text = await cloud.wait_for("v6a", r"PING6-FAIL", count=4, timeout=60)
    assert "PING6-OK" not in text, "ICMPv6 echo reached a port whose security group does not allow it"

    opened = replace(closed, rules=(*closed.rules, INGRESS_ICMP6))
    report = await cloud.dataplane.apply(replace(state, security_groups=(opened,)))
    assert any("security-groups-v6" in c for c in report.changed), report
    changed_at = time.monotonic()
    await cloud.wait_for("v6a", r"PING6-OK", timeout=30)
    await cloud.wait_for("v6b", r"PING6-OK", timeout=30)
    print(f"ping6 allowed {time.monotonic() - changed_at:.1f}s after the rule was applied")
    ra_sender = (cloud.dataplane.root / "dhcp" / net.id / "argv.json").read_text()
    assert "--enable-ra" in ra_sender and "ra-only" in ra_sender


async def test_a_server_without_a_config_drive_reads_its_user_data_over_http(cloud: Cloud) -> None:
    net = network("10.97.7.0/24", vni=108)
    group = SecurityGroupState(id="sg-http", rules=(EGRESS_ANY,))
    vm = port(net, 11, "httpmd", "sg-http")
    await cloud.dataplane.apply(HostNetworkState(host="h", networks=(net,), ports=(vm,), security_groups=(group,)))
    cloud.metadata.table[(net.id, ip_of(vm))] = InstanceMetadata(
        uuid=vm.device_id, name=vm.hostname, hostname="httpmd", local_ipv4=ip_of(vm),
        user_data=b"#!/bin/sh\necho USERDATA-OVER-HTTP $(hostname)\n")
    await cloud.boot(vm, "#!/bin/sh\necho FROM-CONFIG-DRIVE\n", config_drive=False)
    text = await cloud.wait_for("httpmd", r"YUNSTACK-READY")
    assert f"YUNSTACK-METADATA instance-id={vm.device_id} hostname=httpmd source=http" in text, text[-1500:]
    assert "USERDATA-OVER-HTTP httpmd" in text and "FROM-CONFIG-DRIVE" not in text, text[-1500:]


async def test_a_port_with_a_bad_value_is_quarantined_and_every_other_object_is_still_applied(root: Path) -> None:
    good_net, bad_net = network("10.97.8.0/24", vni=109), network("10.97.9.0/24", vni=110)
    bad_net = replace(bad_net, dhcp_mac="x")  # its DHCP namespace cannot be made
    group = SecurityGroupState(id="sg", rules=(EGRESS_ANY, INGRESS_ICMP))
    good = port(good_net, 11, "good", "sg")
    bad = replace(port(good_net, 12, "bad", "sg"), allowed_address_pairs=(("10.97.8.50", "x"),))
    state = HostNetworkState(host="h", networks=(good_net, bad_net), ports=(good, bad), security_groups=(group,))
    dp = LinuxDataplane(root / "iso", metadata_upstream="http://127.0.0.1:9/metadata")
    try:
        report = await dp.apply(state)
        assert any(f.startswith(f"port {bad.id}: bad allowed address pair MAC 'x'") for f in report.failed), report
        assert any(f.startswith(f"dhcp of network {bad_net.id}") for f in report.failed), report
        ingress, egress, spoof = dp.names.port_chains(good.id)
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout.splitlines()
        assert f"-A {spoof} -s 10.97.8.11/32 -m mac --mac-source {good.mac_address} -j RETURN" in rules
        assert f"-A {ingress} -p icmp -j RETURN" in rules
        bad_chains = dp.names.port_chains(bad.id)
        assert [r for r in rules if r.split(" ")[1:2] == [bad_chains[0]]] == [f"-A {bad_chains[0]} -j DROP"]
        rules6 = subprocess.run(["ip6tables-save"], capture_output=True, text=True, check=True).stdout
        assert f"-A {egress} -j {spoof}" in rules6
        # The good network's dnsmasq runs although the other network's DHCP failed.
        assert _proc.find(str(dp.root / "dhcp" / good_net.id), "dnsmasq")
        again = await dp.apply(state)
        assert again.failed and not again.changed, again  # failures are retried, nothing else moves
        # Once the value is fixed the port gets its rules.
        fixed = replace(state, ports=(good, replace(bad, allowed_address_pairs=())), networks=(good_net,))
        report = await dp.apply(fixed)
        assert not report.failed, report
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout.splitlines()
        assert f"-A {bad_chains[0]} -p icmp -j RETURN" in rules
    finally:
        await dp.teardown()
    assert all(not v for v in our_objects(dp).values()), our_objects(dp)
