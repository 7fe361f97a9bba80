"""IPv6 and HTTP metadata through the real `openstack` CLI, a real `yun up`, real QEMU and the dataplane.

The cloud runs with ``[compute] force_config_drive = false`` so that a server created without
``--config-drive`` has none and reads its metadata over HTTP from 169.254.169.254.  A member of the
demo project makes a network with an IPv4 subnet (10.96.0.0/24) and a SLAAC IPv6 subnet
(fd00:96::/64, a ULA of our own), boots two servers in a group without ICMPv6 and watches their
ping6 to each other fail until an ICMPv6 rule is added; then a third server without a config drive
prints its user_data (on a network of its own, 10.96.1.0/24).  No router, no external network: nothing leaves the host.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud import RunningCloud, names_rule, start_cloud
from tests.integration.test_dataplane import ADDR6, PING6_FOREVER
from tests.integration.test_openstack_cli_network import DEMO, console, host_objects, wait_console
from yunstack.network.dataplane.naming import Names, install_tag

pytestmark = pytest.mark.integration

# Each test its own network, so either runs alone (-k) and cleans up after itself.
NETWORKS, GROUP = ("n6", "n6http"), "sg6"
V6_RANGE = "fd00:96::/64"
READY = re.compile(r"YUNSTACK-READY hostname=\S+ ip=\S+ instance-id=(\S+) ip6=")


def objects6(state_dir: Path) -> dict[str, list[str]]:
    """host_objects plus the installation's ip6tables lines."""
    names = Names(install_tag(state_dir))
    rules6 = subprocess.run(["ip6tables-save"], capture_output=True, text=True, check=True).stdout
    return {**host_objects(state_dir),
            "ip6tables": sorted(x for x in rules6.splitlines() if names_rule(names, x))}


def v6_address(cloud: RunningCloud, server: str) -> str:
    shown = cloud.osc_json("server", "show", server, cloud=DEMO)
    found = [a for a in re.findall(r"[0-9a-f:]*:[0-9a-f:]+", json.dumps(shown["addresses"]))
             if _in(a, V6_RANGE)]
    assert len(found) == 1, shown["addresses"]
    return found[0]


def _in(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)
    except ValueError:
        return False


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    running = start_cloud(tmp_path_factory.mktemp("ipv6md"), env={"YUN_COMPUTE_FORCE_CONFIG_DRIVE": "false"},
                          timeout=120)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            _delete_everything(running)
        running.stop()
        if any(objects6(running.state_dir).values()):
            import asyncio

            from yunstack.network.dataplane.linux import LinuxDataplane

            asyncio.run(LinuxDataplane(running.state_dir, metadata_upstream="http://127.0.0.1:9").teardown())


def _delete_everything(cloud: RunningCloud) -> None:
    """Best effort, in dependency order, for a test that failed half-way."""
    for server in cloud.osc_json("server", "list", cloud=DEMO):
        cloud.osc("server", "delete", "--wait", server["ID"], cloud=DEMO, check=False)
    for port in ("p6a", "p6b"):
        cloud.osc("port", "delete", port, cloud=DEMO, check=False)
    for network in NETWORKS:
        delete_network(cloud, network, check=False)
    cloud.osc("security", "group", "delete", GROUP, cloud=DEMO, check=False)


def make_network(cloud: RunningCloud, name: str, v4: str, v6: str | None = None) -> None:
    """A network with an IPv4 subnet (DHCP, the metadata route) and, if asked, a SLAAC IPv6 one."""
    cloud.osc("network", "create", name, cloud=DEMO)
    cloud.osc("subnet", "create", "--network", name, "--subnet-range", v4, f"{name}-v4", cloud=DEMO)
    if v6 is not None:
        shown = cloud.osc_json("subnet", "create", "--network", name, "--ip-version", "6", "--ipv6-ra-mode",
                               "slaac", "--ipv6-address-mode", "slaac", "--subnet-range", v6, f"{name}-v6",
                               cloud=DEMO)
        assert (shown["ipv6_ra_mode"], shown["ipv6_address_mode"], shown["ip_version"]) == ("slaac", "slaac", 6)


def delete_network(cloud: RunningCloud, name: str, *, check: bool = True) -> None:
    for suffix in ("v6", "v4"):
        if check and suffix == "v6" and cloud.osc("subnet", "show", f"{name}-v6", cloud=DEMO, check=False).returncode:
            continue
        cloud.osc("subnet", "delete", f"{name}-{suffix}", cloud=DEMO, check=check)
    cloud.osc("network", "delete", name, cloud=DEMO, check=check)


def test_two_guests_on_a_slaac_subnet_ping6_each_other_only_once_a_group_allows_icmpv6(
        cloud: RunningCloud, tmp_path: Path) -> None:
    osc, osc_json = cloud.osc, cloud.osc_json
    network = NETWORKS[0]
    make_network(cloud, network, "10.96.0.0/24", V6_RANGE)
    osc("security", "group", "create", GROUP, cloud=DEMO)
    rules = osc_json("security", "group", "rule", "list", GROUP, cloud=DEMO)
    assert not any(r["Direction"] == "ingress" for r in rules), rules

    # Ports first, so each guest's user_data can name the other's address.
    ports = {name: osc_json("port", "create", "--network", network, "--security-group", GROUP, f"p6{name}",
                            cloud=DEMO) for name in ("a", "b")}
    v6 = {}
    for name, port in ports.items():
        found = [a for a in re.findall(r"[0-9a-f:]*:[0-9a-f:]+", json.dumps(port["fixed_ips"])) if _in(a, V6_RANGE)]
        assert len(found) == 1, port["fixed_ips"]
        v6[name] = found[0]
    began = time.monotonic()
    for name, other in (("a", "b"), ("b", "a")):
        (tmp_path / f"{name}.sh").write_text(PING6_FOREVER.format(other=v6[other]))
        osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--port", f"p6{name}",
            "--config-drive", "True", "--user-data", str(tmp_path / f"{name}.sh"), "--wait", f"v6{name}",
            cloud=DEMO)
    active = time.monotonic() - began
    for name in ("a", "b"):
        text = wait_console(cloud, f"v6{name}", r"ADDR6 .+?END")
        ready, made = READY.search(text), ADDR6.search(text)
        assert ready is not None and made is not None, text[-1500:]
        # The address the guest made itself from the RA is the one the API shows.
        assert v6[name] in made.group(1).split(), (made.group(0), v6[name])
        assert v6_address(cloud, f"v6{name}") == v6[name]
        assert ready.group(1) == osc_json("server", "show", f"v6{name}", cloud=DEMO)["id"]
    print(f"both ACTIVE {active:.1f}s, READY with SLAAC addresses {time.monotonic() - began:.1f}s after create")

    text = wait_console(cloud, "v6a", r"(PING6-FAIL[\s\S]*){4}", timeout=90)
    assert "PING6-OK" not in text, "ICMPv6 echo reached a port whose security group does not allow it"
    marks = {name: len(console(cloud, f"v6{name}")) for name in ("a", "b")}
    during = objects6(cloud.state_dir)
    assert during["ip6tables"], during
    osc("security", "group", "rule", "create", "--ingress", "--ethertype", "IPv6", "--protocol", "ipv6-icmp",
        GROUP, cloud=DEMO)
    ruled = time.monotonic()
    for name in ("a", "b"):
        wait_console(cloud, f"v6{name}", r"PING6-OK", timeout=30, after=marks[name])
    print(f"ping6 allowed both ways {time.monotonic() - ruled:.1f}s after the ICMPv6 rule was created")

    osc("server", "delete", "--wait", "v6a", "v6b", cloud=DEMO)
    for name in ("a", "b"):
        osc("port", "delete", f"p6{name}", cloud=DEMO)
    osc("security", "group", "delete", GROUP, cloud=DEMO)
    delete_network(cloud, network)


def test_a_guest_without_a_config_drive_fetches_its_own_user_data_over_http(
        cloud: RunningCloud, tmp_path: Path) -> None:
    osc, osc_json = cloud.osc, cloud.osc_json
    network = NETWORKS[1]
    make_network(cloud, network, "10.96.1.0/24")
    (tmp_path / "user.sh").write_text("#!/bin/sh\necho \"USERDATA-OVER-HTTP $(hostname)\"\n")
    began = time.monotonic()
    osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--network", network,
        "--user-data", str(tmp_path / "user.sh"), "--wait", "httpmd", cloud=DEMO)
    shown = osc_json("server", "show", "httpmd", cloud=DEMO)
    assert shown["config_drive"] in ("", None, False), shown["config_drive"]
    text = wait_console(cloud, "httpmd", r"YUNSTACK-READY")
    print(f"READY {time.monotonic() - began:.1f}s after create, metadata over HTTP")
    assert f"YUNSTACK-METADATA instance-id={shown['id']} hostname=httpmd source=http" in text, text[-1500:]
    assert "USERDATA-OVER-HTTP httpmd" in text, text[-1500:]

    # -- everything goes, and nothing of it stays on the host --------------------------------------
    osc("server", "delete", "--wait", "httpmd", cloud=DEMO)
    delete_network(cloud, network)
    deadline = time.monotonic() + 15
    while True:
        left = objects6(cloud.state_dir)
        if not left["namespaces"] and not left["processes"] and not left["links"]:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.5)
    names = Names(install_tag(cloud.state_dir))
    assert not any(f"{names.ifprefix}t" in line for line in left["iptables"] + left["ip6tables"]), left
    assert cloud.stop() == 0, cloud.log.read_text()[-3000:]
    assert objects6(cloud.state_dir) == {"links": [], "namespaces": [], "iptables": [], "nft": [],
                                         "processes": [], "ip6tables": []}
