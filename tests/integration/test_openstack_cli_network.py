"""The real `openstack` CLI builds a network with the real `yun up`, real QEMU and the Linux dataplane.

A member of the demo project makes a network with a router to the host-only external network
(172.24.98.0/24 here), a security group without ICMP, and two tiny servers whose user_data reports on the
serial console: B pings A every second and both read the metadata service.  The test watches ping
start working once an ICMP rule is added, reaches A from the host through a floating IP, hot-plugs
and unplugs a NIC into the running A, and finally deletes everything and checks that, after the
cloud stopped, no host object of this installation is left.  Addresses: 10.98.0.0/24 (ours) and
172.24.98.0/24 (the test cloud's own host-only network); nothing leaves the host.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud import RunningCloud, names_rule, start_cloud
from yunstack.network.dataplane import _proc
from yunstack.network.dataplane.naming import Names, install_tag

PUBLIC = {"YUN_NETWORK_PUBLIC_NETWORK": "public", "YUN_NETWORK_PUBLIC_CIDR": "172.24.98.0/24",
          "YUN_NETWORK_PUBLIC_GATEWAY": "172.24.98.1", "YUN_NETWORK_PUBLIC_POOL_START": "172.24.98.10",
          "YUN_NETWORK_PUBLIC_POOL_END": "172.24.98.250"}

pytestmark = pytest.mark.integration

DEMO = "yunstack-demo"
READY = re.compile(r"YUNSTACK-READY hostname=(\S+) ip=(\S+) instance-id=(\S+)")
BOOT_TIMEOUT = 120.0

# busybox wget of Debian's busybox-static segfaults, so the guests speak HTTP with nc.
FETCH_METADATA = r"""
fetch() {
    printf 'GET %s HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' "$1" | nc -w 3 169.254.169.254 80 > /tmp/resp
    head -n 1 /tmp/resp | grep -q ' 200 ' && awk 'body { print } /^\r?$/ { body = 1 }' /tmp/resp
}
i=0
until fetch /openstack/latest/meta_data.json > /tmp/md; do
    i=$((i + 1)); [ $i -ge 30 ] && break; sleep 1
done
echo "MD-BEGIN $(cat /tmp/md | tr -d '\n') MD-END"
"""

# A: its metadata, then a watcher that reports NICs as they come and go and asks DHCP for the
# address of every new one (printing it, without configuring it).
SERVER_A = "#!/bin/sh\n" + FETCH_METADATA + r"""
printf '#!/bin/sh\n[ "$1" = bound ] && echo "$ip" > /tmp/$interface.ip\nexit 0\n' > /tmp/dhcp-report.sh
chmod +x /tmp/dhcp-report.sh
( last=""
  while true; do
      now=$(ls /sys/class/net | tr '\n' ' ')
      if [ "$now" != "$last" ]; then
          echo "NICS $now"
          for nic in $now; do
              case " $last " in *" $nic "*) continue ;; esac
              case "$nic" in lo|eth0) continue ;; esac
              ip link set "$nic" up
              udhcpc -i "$nic" -n -q -t 10 -T 1 -s /tmp/dhcp-report.sh > /dev/null 2>&1
              echo "NIC-ADDR $nic $(cat /tmp/$nic.ip 2>/dev/null)"
          done
          last=$now
      fi
      sleep 1
  done ) &
"""

# B: one DHCP exchange timed, its metadata, then a ping of A every second.
SERVER_B = "#!/bin/sh\n" + r"""
t0=$(cut -d' ' -f1 /proc/uptime)
udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true > /dev/null 2>&1
t1=$(cut -d' ' -f1 /proc/uptime)
echo "DHCP-EXCHANGE start=$t0 end=$t1"
""" + FETCH_METADATA + r"""
( while true; do
      if ping -c 1 -W 1 {a_ip} > /dev/null 2>&1; then echo PING-OK; else echo PING-FAIL; fi
      sleep 1
  done ) &
"""


def host_objects(state_dir: Path) -> dict[str, list[str]]:
    """Every host object that carries this installation's names (see docs/explanation/networking.md)."""
    names = Names(install_tag(state_dir))
    links = [line.split(":")[1].strip().split("@")[0] for line in
             subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()]
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    root = str(state_dir / "network")
    return {
        "links": sorted(x for x in links if x.startswith(names.ifprefix)),
        "namespaces": sorted(x for x in spaces if x.startswith(names.nsprefix)),
        "iptables": sorted(x for x in rules.splitlines() if names_rule(names, x)),
        "nft": sorted(x for x in tables.splitlines() if names.nft_table in x),
        "processes": sorted(str(p) for p in _proc.find(root, "dnsmasq") + _proc.find(root, "metadata_proxy")),
    }


def console(cloud: RunningCloud, server: str) -> str:
    return cloud.osc("console", "log", "show", server, cloud=DEMO).stdout


def wait_console(cloud: RunningCloud, server: str, pattern: str, timeout: float = BOOT_TIMEOUT,
                 after: int = 0) -> str:
    """The console once ``pattern`` appears in it past character ``after``."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(cloud, server)
        if re.search(pattern, text[after:]):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not on {server}'s console within {timeout}s:\n{text[-2500:]}")


def api_address(cloud: RunningCloud, server: str) -> list[str]:
    shown = cloud.osc_json("server", "show", server, cloud=DEMO)
    return re.findall(r"10\.98\.0\.\d+", json.dumps(shown["addresses"]))


def metadata_of(text: str) -> dict[str, Any]:
    found = re.search(r"MD-BEGIN (.*) MD-END", text)
    assert found is not None, text[-2000:]
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def ping_from_host(address: str, tries: int = 10) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ping", "-c", "2", "-W", "2", address], capture_output=True, text=True)
    for _ in range(tries - 1):
        if done.returncode == 0:
            break
        time.sleep(1)
        done = subprocess.run(["ping", "-c", "2", "-W", "2", address], capture_output=True, text=True)
    return done


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    # Its own external range: a `yun up` on this machine may own the default 172.24.4.0/24.
    running = start_cloud(tmp_path_factory.mktemp("network"), env=PUBLIC, timeout=120)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            _delete_everything(running)
        running.stop()
        leftovers = host_objects(running.state_dir)
        if any(leftovers.values()):
            # A failed test must not leave a bridge holding the gateway address behind for the next one.
            import asyncio

            from yunstack.network.dataplane.linux import LinuxDataplane

            asyncio.run(LinuxDataplane(running.state_dir, metadata_upstream="http://127.0.0.1:9").teardown())


def _delete_everything(cloud: RunningCloud) -> None:
    """Best effort, in dependency order, for a test that failed half-way."""
    for server in cloud.osc_json("server", "list", cloud=DEMO):
        cloud.osc("server", "delete", "--wait", server["ID"], cloud=DEMO, check=False)
    for fip in cloud.osc_json("floating", "ip", "list", cloud=DEMO):
        cloud.osc("floating", "ip", "delete", fip["ID"], cloud=DEMO, check=False)
    cloud.osc("router", "remove", "subnet", "r1", "s1", cloud=DEMO, check=False)
    cloud.osc("router", "unset", "--external-gateway", "r1", cloud=DEMO, check=False)
    cloud.osc("router", "delete", "r1", cloud=DEMO, check=False)
    for port in cloud.osc_json("port", "list", "--network", "n1", cloud=DEMO) if _exists(cloud, "n1") else []:
        cloud.osc("port", "delete", port["ID"], cloud=DEMO, check=False)
    cloud.osc("subnet", "delete", "s1", cloud=DEMO, check=False)
    cloud.osc("network", "delete", "n1", cloud=DEMO, check=False)
    cloud.osc("security", "group", "delete", "sgX", cloud=DEMO, check=False)


def _exists(cloud: RunningCloud, network: str) -> bool:
    return cloud.osc("network", "show", network, cloud=DEMO, check=False).returncode == 0


def test_a_member_builds_a_routed_network_and_everything_it_made_leaves_no_trace(
        cloud: RunningCloud, tmp_path: Path) -> None:
    osc, osc_json = cloud.osc, cloud.osc_json
    osc("network", "create", "n1", cloud=DEMO)
    osc("subnet", "create", "--network", "n1", "--subnet-range", "10.98.0.0/24", "s1", cloud=DEMO)
    osc("router", "create", "r1", cloud=DEMO)
    osc("router", "set", "--external-gateway", "public", "r1", cloud=DEMO)
    osc("router", "add", "subnet", "r1", "s1", cloud=DEMO)
    osc("security", "group", "create", "sgX", cloud=DEMO)
    rules = osc_json("security", "group", "rule", "list", "sgX", cloud=DEMO)
    assert not any(r["IP Protocol"] == "icmp" for r in rules), rules

    # -- two servers, their addresses from DHCP equal to what the API shows ------------------------
    (tmp_path / "a.sh").write_text(SERVER_A)
    began = time.monotonic()
    osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--network", "n1", "--security-group",
        "sgX", "--user-data", str(tmp_path / "a.sh"), "--wait", "A", cloud=DEMO)
    a_active = time.monotonic() - began
    a_ip = api_address(cloud, "A")
    assert len(a_ip) == 1, a_ip
    (tmp_path / "b.sh").write_text(SERVER_B.replace("{a_ip}", a_ip[0]))
    began_b = time.monotonic()
    osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--network", "n1",
        "--user-data", str(tmp_path / "b.sh"), "--wait", "B", cloud=DEMO)
    b_ip = api_address(cloud, "B")
    a_text = wait_console(cloud, "A", r"YUNSTACK-READY")
    a_ready = time.monotonic() - began
    b_text = wait_console(cloud, "B", r"YUNSTACK-READY")
    b_ready = time.monotonic() - began_b
    ids = {name: osc_json("server", "show", name, cloud=DEMO)["id"] for name in ("A", "B")}
    for name, text, ip in (("A", a_text, a_ip), ("B", b_text, b_ip)):
        ready = READY.search(text)
        assert ready is not None and [ready.group(2)] == ip, (name, ready and ready.group(0), ip)
        assert ready.group(3) == ids[name]
    exchange = re.search(r"DHCP-EXCHANGE start=([\d.]+) end=([\d.]+)", b_text)
    assert exchange is not None
    print(f"A: ACTIVE {a_active:.1f}s, READY {a_ready:.1f}s after create; B: READY {b_ready:.1f}s; "
          f"B's DHCP exchange {float(exchange.group(2)) - float(exchange.group(1)):.2f}s")

    # -- each server's metadata is its own ---------------------------------------------------------
    for name, text, other in (("A", a_text, "B"), ("B", b_text, "A")):
        data = metadata_of(text)
        assert data["uuid"] == ids[name] and data["hostname"].split(".")[0] == name.lower(), data
        assert ids[other] not in json.dumps(data)

    # -- no ICMP rule: B's pings fail; with one they pass within one reconcile ---------------------
    text = wait_console(cloud, "B", r"(PING-FAIL[\s\S]*){3}")
    assert "PING-OK" not in text, "ICMP reached a port whose security group does not allow it"
    mark = len(text)
    osc("security", "group", "rule", "create", "--protocol", "icmp", "--ingress", "sgX", cloud=DEMO)
    ruled = time.monotonic()
    wait_console(cloud, "B", r"PING-OK", timeout=15, after=mark)
    rule_seconds = time.monotonic() - ruled
    print(f"ping allowed {rule_seconds:.1f}s after the ICMP rule was created")

    # -- a floating IP makes A reachable from the host ---------------------------------------------
    fip = osc_json("floating", "ip", "create", "public", cloud=DEMO)["floating_ip_address"]
    assert fip.startswith("172.24.98.")
    osc("server", "add", "floating", "ip", "A", fip, cloud=DEMO)
    added = time.monotonic()
    ping = ping_from_host(fip)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    print(f"host -> floating IP {fip} answered {time.monotonic() - added:.1f}s after it was associated: "
          f"{ping.stdout.strip().splitlines()[-1]}")
    assert fip in json.dumps(osc_json("server", "show", "A", cloud=DEMO)["addresses"])

    # -- a network with servers on it cannot go ----------------------------------------------------
    refused = osc("network", "delete", "n1", cloud=DEMO, check=False)
    assert refused.returncode != 0 and ("409" in refused.stderr or "in use" in refused.stderr), refused.stderr

    # -- hot-plug: a port, then a network, into the running A; and out again -----------------------
    port = osc_json("port", "create", "--network", "n1", "extra", cloud=DEMO)
    port_ip = port["fixed_ips"][0]["ip_address"] if isinstance(port["fixed_ips"], list) else \
        re.findall(r"10\.98\.0\.\d+", str(port["fixed_ips"]))[0]
    mark = len(console(cloud, "A"))
    plugged = time.monotonic()
    osc("server", "add", "port", "A", "extra", cloud=DEMO)
    text = wait_console(cloud, "A", r"NIC-ADDR eth1 \S+", timeout=60, after=mark)
    print(f"attached NIC up with a DHCP address {time.monotonic() - plugged:.1f}s after `server add port`")
    assert f"NIC-ADDR eth1 {port_ip}" in text[mark:], text[-1500:]
    mark = len(text)
    osc("server", "remove", "port", "A", "extra", cloud=DEMO)
    wait_console(cloud, "A", r"NICS eth0 lo", timeout=60, after=mark)
    deadline = time.monotonic() + 30
    while osc_json("port", "show", "extra", cloud=DEMO)["device_id"]:
        assert time.monotonic() < deadline, "the detached port still names the server"
        time.sleep(0.5)
    osc("port", "delete", "extra", cloud=DEMO)
    mark = len(console(cloud, "A"))
    osc("server", "add", "network", "A", "n1", cloud=DEMO)
    wait_console(cloud, "A", r"NIC-ADDR eth\d \S+", timeout=60, after=mark)
    ports = osc_json("port", "list", "--server", "A", cloud=DEMO)
    assert len(ports) == 2, ports
    newest = [p for p in ports if a_ip[0] not in json.dumps(p)]
    assert len(newest) == 1, ports
    osc("server", "remove", "port", "A", newest[0]["ID"], cloud=DEMO)
    deadline = time.monotonic() + 30
    while len(osc_json("port", "list", "--server", "A", cloud=DEMO)) != 1:
        assert time.monotonic() < deadline, "the attached network's port was not released"
        time.sleep(0.5)

    # -- everything goes, and nothing of it stays on the host --------------------------------------
    during = host_objects(cloud.state_dir)
    assert during["namespaces"] and during["processes"], during
    osc("server", "delete", "--wait", "A", "B", cloud=DEMO)
    osc("floating", "ip", "delete", fip, cloud=DEMO)
    osc("router", "remove", "subnet", "r1", "s1", cloud=DEMO)
    osc("router", "unset", "--external-gateway", "r1", cloud=DEMO)
    osc("router", "delete", "r1", cloud=DEMO)
    osc("subnet", "delete", "s1", cloud=DEMO)
    osc("network", "delete", "n1", cloud=DEMO)
    osc("security", "group", "delete", "sgX", cloud=DEMO)
    # Within one reconcile (5 s) only what the public network needs is left: its bridge, which holds
    # the host's gateway address, and the installation's base chains with their hooks.
    names = Names(install_tag(cloud.state_dir))
    deadline = time.monotonic() + 15
    while True:
        left = host_objects(cloud.state_dir)
        if not left["namespaces"] and not left["processes"] and len(left["links"]) == 1:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.5)
    assert left["links"][0].startswith(f"{names.ifprefix}b"), left
    assert not any(f"{names.ifprefix}t" in line for line in left["iptables"]), left
    assert cloud.stop() == 0, cloud.log.read_text()[-3000:]
    # No VM port and no router is left, so the shutdown removed the rest (see networking.md).
    assert host_objects(cloud.state_dir) == {"links": [], "namespaces": [], "iptables": [], "nft": [],
                                             "processes": []}
