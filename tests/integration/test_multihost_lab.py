"""The real `openstack` CLI against `yun up --hosts 3` on PostgreSQL: one cloud, three compute hosts.

Each lab host is a `yun agent` in its own network namespace on the lab underlay, joined over
``/agent/v1`` like a real host; the control host is the network host (DHCP over VXLAN to the
guests).  One cloud serves the whole module (CI time): the hosts come up, two guests on different
hosts ping each other over VXLAN, an anti-affinity group spreads three servers over the three
hosts and refuses a fourth with every host's reason, a disabled host gets no new server, the memory
balancer moves growing guests off a host in auto mode (and in advise mode only shows its plan, the
host then ending in an OOM kill), and an agent killed with -9 leaves its host down within 30 s.
Stopping the cloud leaves nothing of the lab behind (namespaces, links, processes, directories).
Addresses: 10.96.0.0/24 (tenant) and the lab's own 10.250.K.0/24 underlay; nothing leaves the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloud import BIN, RunningCloud, serving_cloud
from tests.conftest import need, postgres_database
from yunstack.bench.cluster import kernel_oom_kills
from yunstack.lab.cluster import budget_cgroup, lab_cidr
from yunstack.lab.underlay import Underlay
from yunstack.network.dataplane.naming import install_tag

pytestmark = pytest.mark.integration

HOSTS = ["lab-h1", "lab-h2", "lab-h3"]
BOOT_TIMEOUT = 150.0
A_IP, B_IP = "10.96.0.11", "10.96.0.12"

# Each guest pings the other once a second and says so on its serial console.
TICKER = """#!/bin/sh
(while :; do echo "TICK $(cut -d' ' -f1 /proc/uptime)" > /dev/console; sleep 1; done) < /dev/null > /dev/null 2>&1 &
"""
PINGER = """#!/bin/sh
( while true; do
      if ping -c 1 -W 1 {peer} > /dev/null 2>&1; then echo PING-OK {peer}; else echo PING-FAIL {peer}; fi
      sleep 1
  done ) &
"""


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database("yt_lab") as (url, _):  # empty: `yun up` migrates it
        yield url


def lab_of(state_dir: Path) -> Underlay:
    return Underlay(install_tag(state_dir), lab_cidr(state_dir))


def lab_leftovers(state_dir: Path) -> dict[str, Any]:
    lab = lab_of(state_dir)
    procs = subprocess.run(["pgrep", "-f", str(state_dir / "lab")], capture_output=True, text=True).stdout.split()
    return {"namespaces": sorted(lab.namespaces()), "links": sorted(lab.links()), "processes": procs,
            "directory": (state_dir / "lab").exists()}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[RunningCloud]:
    need(os.geteuid() == 0, "root (network namespaces, bridges, VXLAN)")
    need(all(shutil.which(t) for t in ("ip", "nsenter", "qemu-system-x86_64")), "iproute2, nsenter, QEMU")
    state_dir = tmp_path_factory.mktemp("lab")
    began = time.monotonic()
    # The memory balancer test's guests are small (192 MiB, lab hosts have 1 GiB each): a move of one
    # is worth it here, and its pass comes every 10 s (the balancer plans only in the other tests).
    # Its target is 40 % (three such guests trigger it once they have grown, with room for those it moves).
    # RAM is overcommitted 4:1 (the advise test's six guests on one host; at 1.5 with 512 MiB reserved a
    # 1 GiB lab host takes four m1.micro, whose grown working sets fit it).
    env = {"YUN_COMPUTE_MEMORY_BALANCER_MIN_BENEFIT_MIB": "64", "YUN_COMPUTE_MEMORY_BALANCER_INTERVAL": "10",
           "YUN_COMPUTE_MEMORY_BALANCER_TARGET_PERCENT": "40", "YUN_COMPUTE_RAM_ALLOCATION_RATIO": "4"}
    with serving_cloud(state_dir, env=env, args=["--hosts", "3", "--database", postgres_url]) as running:
        hosts = wait_hosts_up(running, 120)
        print(f"yun up --hosts 3: API answered, all 3 hosts up {time.monotonic() - began:.1f}s after start: {hosts}")
        yield running
        _delete_network(running)
    assert lab_leftovers(state_dir) == {"namespaces": [], "links": [], "processes": [], "directory": False}


def _delete_network(cloud: RunningCloud) -> None:
    servers = [s["ID"] for s in cloud.osc_json("server", "list", "--all-projects")]
    if servers:  # a test failed half-way
        cloud.osc("server", "delete", "--wait", *servers, check=False)
    cloud.osc("port", "delete", "pa", "pb", check=False)  # ports given to a server outlive it
    cloud.osc("network", "delete", "n1", check=False)


def hypervisors(cloud: RunningCloud) -> dict[str, str]:
    """Host name -> state."""
    return {h["Hypervisor Hostname"]: h["State"] for h in cloud.osc_json("hypervisor", "list")}


def wait_hosts_up(cloud: RunningCloud, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = hypervisors(cloud)
        if seen == dict.fromkeys(HOSTS, "up"):
            return seen
        time.sleep(1)
    raise AssertionError(f"the lab hosts are not all up: {seen}")


def create(cloud: RunningCloud, name: str, *extra: str) -> str:
    """Boot ``name`` and wait for ACTIVE; returns the host it runs on (one CLI call: CI time)."""
    done = cloud.osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--wait", "-f", "json", *extra,
                     name, check=False)
    if done.returncode != 0:
        fault = cloud.osc("server", "show", name, "-c", "fault", check=False).stdout
        raise AssertionError(f"server create {name} failed: {done.stderr}\n{fault}")
    return str(json.loads(done.stdout)["OS-EXT-SRV-ATTR:host"])


def delete(cloud: RunningCloud, *names: str) -> None:
    cloud.osc("server", "delete", "--wait", *names)


def wait_console(cloud: RunningCloud, server: str, marker: str, timeout: float = BOOT_TIMEOUT,
                 before: str = "") -> str:
    """The console once ``marker`` is in what came after ``before`` (a moved guest's console may
    start afresh on its new host)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = cloud.osc("console", "log", "show", server).stdout
        out = out[len(before):] if before and out.startswith(before) else out
        if marker in out:
            return out
        time.sleep(1)
    raise AssertionError(f"{marker!r} not on {server}'s console within {timeout}s:\n{out[-2500:]}")


def test_hypervisor_list_shows_the_three_lab_hosts_up_and_the_control_host_is_no_hypervisor(
        cloud: RunningCloud) -> None:
    assert hypervisors(cloud) == dict.fromkeys(HOSTS, "up")
    services = {s["Host"]: (s["Status"], s["State"]) for s in cloud.osc_json("compute", "service", "list")}
    assert services == dict.fromkeys(HOSTS, ("enabled", "up"))


def test_two_servers_on_one_tenant_network_on_different_hosts_ping_each_other_over_vxlan(
        cloud: RunningCloud, tmp_path: Path) -> None:
    osc = cloud.osc
    osc("network", "create", "n1")
    osc("subnet", "create", "--network", "n1", "--subnet-range", "10.96.0.0/24", "s1")
    network = cloud.osc_json("network", "show", "n1")
    assert network["provider:network_type"] == "vxlan" and network["mtu"] == 1450
    osc("port", "create", "--network", "n1", "--fixed-ip", f"subnet=s1,ip-address={A_IP}", "pa")
    osc("port", "create", "--network", "n1", "--fixed-ip", f"subnet=s1,ip-address={B_IP}", "pb")
    for name, port, peer, host in (("A", "pa", B_IP, "lab-h1"), ("B", "pb", A_IP, "lab-h2")):
        script = tmp_path / f"{name}.sh"
        script.write_text(PINGER.format(peer=peer))
        assert create(cloud, name, "--port", port, "--availability-zone", f"nova:{host}",
                      "--user-data", str(script)) == host
    started = time.monotonic()
    # DHCP (from the control host) and the pings both cross the VXLAN tunnels: the lab hosts'
    # namespaces share nothing but the underlay.
    wait_console(cloud, "A", f"PING-OK {B_IP}")
    wait_console(cloud, "B", f"PING-OK {A_IP}")
    print(f"A (lab-h1) and B (lab-h2) ping each other {time.monotonic() - started:.1f}s after both were ACTIVE")
    lab = lab_of(cloud.state_dir)
    for index in (1, 2):
        devices = subprocess.run(lab.host(index).argv("ip", "-d", "-j", "link", "show", "type", "vxlan"),
                                 capture_output=True, text=True, check=True).stdout
        vxlans = json.loads(devices or "[]")
        assert [d["linkinfo"]["info_data"]["id"] for d in vxlans] == [network["provider:segmentation_id"]]
    # Each lab host shows its own underlay address, the one its tunnels and migrations use.
    ips = {h["Hypervisor Hostname"]: h["Host IP"] for h in cloud.osc_json("hypervisor", "list")}
    assert len(set(ips.values())) == 3 and all(ip.startswith("10.250.") for ip in ips.values()), ips

    # A moves live to another lab host (its port plugged there before it arrives), keeps its
    # address, and goes on pinging B over VXLAN from there.
    before = cloud.osc("console", "log", "show", "A").stdout
    target = "lab-h3"
    began = time.monotonic()
    cloud.osc("server", "migrate", "--live-migration", "--host", target, "--wait", "A")
    shown = cloud.osc_json("server", "show", "A")
    assert shown["OS-EXT-SRV-ATTR:host"] == target and A_IP in json.dumps(shown["addresses"]), \
        (shown["OS-EXT-SRV-ATTR:host"], shown.get("fault"), _why_not_moved(cloud, "A"))
    new = wait_console(cloud, "A", f"PING-OK {B_IP}", before=before)
    assert "YUNSTACK-BOOT" not in new, "A booted again: it was not moved live"
    print(f"A (with its port) moved live lab-h1 -> {target} and pings B again {time.monotonic() - began:.1f}s "
          "after the request")
    assert cloud.osc_json("port", "show", "pa")["binding_host_id"] == target
    delete(cloud, "A", "B")


def test_an_anti_affinity_group_spreads_three_servers_and_refuses_a_fourth_naming_every_host(
        cloud: RunningCloud) -> None:
    group = cloud.osc_json("server", "group", "create", "--policy", "anti-affinity", "spread")["id"]
    assert sorted(create(cloud, f"g{i}", "--hint", f"group={group}") for i in range(3)) == HOSTS
    refused = cloud.osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--wait", "--hint",
                        f"group={group}", "g3", check=False)
    assert refused.returncode != 0
    shown = cloud.osc_json("server", "show", "g3")
    assert shown["status"] == "ERROR"
    fault = json.dumps(shown["fault"])
    assert "No valid host" in fault, fault
    for host in HOSTS:
        assert f"{host}: ServerGroupAntiAffinityFilter" in fault, fault
    delete(cloud, "g0", "g1", "g2", "g3")
    cloud.osc("server", "group", "delete", "spread")


def test_a_disabled_host_gets_no_new_server(cloud: RunningCloud) -> None:
    cloud.osc("compute", "service", "set", "--disable", "--disable-reason", "maintenance", "lab-h3", "nova-compute")
    try:
        services = {s["Host"]: s["Status"] for s in cloud.osc_json("compute", "service", "list")}
        assert services["lab-h3"] == "disabled"
        placed = [create(cloud, f"d{i}") for i in range(3)]
        assert "lab-h3" not in placed, placed
    finally:
        cloud.osc("compute", "service", "set", "--enable", "lab-h3", "nova-compute")
        cloud.osc("server", "delete", "--wait", "d0", "d1", "d2", check=False)


def test_a_drained_host_hands_its_running_server_to_another_lab_host_without_a_reboot(
        cloud: RunningCloud, tmp_path: Path) -> None:
    # Live migration between two lab hosts (each in its own namespace, over the lab underlay), as
    # `yun host drain` starts it; the ticking console shows the guest's uptime going on.
    script = tmp_path / "tick.sh"
    script.write_text(TICKER)
    assert create(cloud, "M", "--nic", "none", "--availability-zone", "nova:lab-h1", "--user-data",
                  str(script)) == "lab-h1"
    before = wait_console(cloud, "M", "TICK ")
    began = time.monotonic()
    drained = subprocess.run([str(BIN / "yun"), "host", "drain", "lab-h1", "-f", "json"], env=cloud.env(),
                             capture_output=True, text=True, timeout=600)
    try:
        assert drained.returncode == 0, drained.stdout + drained.stderr
        [moved] = json.loads(drained.stdout)
        assert moved["name"] == "M" and moved["result"] == "moved" and moved["host"] in ("lab-h2", "lab-h3"), moved
        print(f"yun host drain lab-h1: M moved to {moved['host']} in {time.monotonic() - began:.1f}s")
        services = {s["Host"]: s["Status"] for s in cloud.osc_json("compute", "service", "list")}
        assert services["lab-h1"] == "disabled", services
        ticks = [float(x) for x in re.findall(r"TICK (\d+\.\d+)", before)]
        new = wait_console(cloud, "M", "TICK ", before=before)
        after = [float(x) for x in re.findall(r"TICK (\d+\.\d+)", new)]
        # The uptime went on from where it was: the guest was moved, not booted again.
        assert after and ticks and min(after) > ticks[-1], (ticks[-3:], after[:3])
        assert "YUNSTACK-BOOT" not in new
        h1 = lab_of(cloud.state_dir).host(1).netns
        assert not [p for p in subprocess.run(["ip", "netns", "pids", h1], capture_output=True, text=True,
                                              check=True).stdout.split()
                    if b"qemu" in Path(f"/proc/{p}/cmdline").read_bytes()], "a QEMU is left on lab-h1"
    finally:
        cloud.osc("compute", "service", "set", "--enable", "lab-h1", "nova-compute")
    delete(cloud, "M")


# The guest writes a mark to its disk (100 MiB in, past the image's partition) on its first boot
# and says on every boot what it finds there: a moved disk shows the same mark.
DISK_MARK = """#!/bin/sh
mark=$(dd if=/dev/vda bs=1M skip=100 count=1 2>/dev/null | head -c 13)
case "$mark" in
  YSMARK-*) echo "MARK-FOUND $mark" > /dev/console ;;
  *) printf 'YSMARK-%s' "$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \\n')" |
       dd of=/dev/vda bs=1M seek=100 conv=notrunc 2>/dev/null
     sync
     echo "MARK-WROTE $(dd if=/dev/vda bs=1M skip=100 count=1 2>/dev/null | head -c 13)" > /dev/console ;;
esac
"""


def wait_status(cloud: RunningCloud, server: str, status: str, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = cloud.osc_json("server", "show", server)
        if shown["status"] == status and not shown.get("OS-EXT-STS:task_state"):
            return shown
        assert shown["status"] != "ERROR", shown
        time.sleep(1)
    raise AssertionError(f"{server} is not {status} within {timeout}s: {shown}")


def guest_files_on(cloud: RunningCloud, server_id: str, index: int) -> list[str]:
    """What lab host ``index`` still has of the guest: QEMU or qemu-nbd processes, its directory."""
    netns = lab_of(cloud.state_dir).host(index).netns
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True).stdout.split()
    left = [f"process {p}" for p in pids if server_id.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
    return left + [str(d) for d in cloud.state_dir.rglob(server_id) if f"h{index}" in str(d)]


def test_cold_migration_and_resize_move_a_server_and_its_disk_between_lab_hosts_with_confirm_and_revert(
        cloud: RunningCloud, tmp_path: Path) -> None:
    script = tmp_path / "mark.sh"
    script.write_text(DISK_MARK)
    assert create(cloud, "C", "--nic", "none", "--availability-zone", "nova:lab-h1", "--user-data",
                  str(script)) == "lab-h1"
    sid = cloud.osc_json("server", "show", "C")["id"]
    first = wait_console(cloud, "C", "MARK-WROTE ")
    mark = re.findall(r"MARK-WROTE (YSMARK-\w+)", first)[0]

    # Cold migration: the guest powers off, its disk moves, it boots on the new host; then confirm.
    began = time.monotonic()
    cloud.osc("server", "migrate", "C")
    shown = wait_status(cloud, "C", "VERIFY_RESIZE")
    moved_to = shown["OS-EXT-SRV-ATTR:host"]
    assert moved_to in ("lab-h2", "lab-h3"), shown
    wait_console(cloud, "C", f"MARK-FOUND {mark}")
    print(f"cold migration lab-h1 -> {moved_to}: the guest found its disk mark {time.monotonic() - began:.1f}s "
          "after the request")
    migration = cloud.osc_json("server", "migration", "list", "--server", "C")[0]
    assert (migration["Status"], migration["Type"]) == ("finished", "migration"), migration
    cloud.osc("server", "migrate", "confirm", "C")
    assert wait_status(cloud, "C", "ACTIVE")["OS-EXT-SRV-ATTR:host"] == moved_to
    assert guest_files_on(cloud, sid, 1) == []  # no process, no disk, no export left on the source

    # Resize to another host (its own is disabled), then revert: back on the old host, old flavor.
    other = "lab-h3" if moved_to == "lab-h2" else "lab-h2"
    index = HOSTS.index(moved_to) + 1
    before = cloud.osc("console", "log", "show", "C").stdout
    cloud.osc("compute", "service", "set", "--disable", moved_to, "nova-compute")
    try:
        cloud.osc("server", "resize", "--flavor", "m1.micro", "C")
        shown = wait_status(cloud, "C", "VERIFY_RESIZE")
        assert shown["OS-EXT-SRV-ATTR:host"] in (other, "lab-h1") and shown["flavor"]["name"] == "m1.micro", shown
        resized_on = shown["OS-EXT-SRV-ATTR:host"]
        wait_console(cloud, "C", f"MARK-FOUND {mark}", before=before)
        cloud.osc("server", "resize", "revert", "C")
        shown = wait_status(cloud, "C", "ACTIVE")
        assert shown["OS-EXT-SRV-ATTR:host"] == moved_to and shown["flavor"]["name"] == "m1.nano", shown
        assert guest_files_on(cloud, sid, HOSTS.index(resized_on) + 1) == []
        assert cloud.osc_json("server", "migration", "list", "--server", "C")[0]["Status"] == "reverted"
    finally:
        cloud.osc("compute", "service", "set", "--enable", moved_to, "nova-compute")
    assert guest_files_on(cloud, sid, index)  # it runs there again
    delete(cloud, "C")


# The guest finds the volume by its serial (the volume's id, 20 characters kept), writes 4 MiB of
# random data to it once and prints their checksum; the reader prints the checksum it reads.
VOLUME_WRITER = """#!/bin/sh
( while :; do
    for d in /sys/block/vd*; do
      if [ "$(cat $d/serial 2>/dev/null)" = "{serial}" ]; then
        dev=/dev/$(basename $d)
        dd if=/dev/urandom of=$dev bs=1M count=4 conv=fsync 2>/dev/null
        echo "VOLSUM $(dd if=$dev bs=1M count=4 2>/dev/null | md5sum | cut -d' ' -f1)" > /dev/console
        exit 0
      fi
    done
    sleep 1
  done ) < /dev/null > /dev/null 2>&1 &
"""
VOLUME_READER = VOLUME_WRITER.replace(
    "dd if=/dev/urandom of=$dev bs=1M count=4 conv=fsync 2>/dev/null\n        ", "").replace("VOLSUM", "VOLREAD")


def wait_volume(cloud: RunningCloud, volume: str, status: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = cloud.osc_json("volume", "show", volume)
        if last["status"] == status:
            return last
        time.sleep(1)
    raise AssertionError(f"volume {volume} is {last.get('status')}, not {status}")


def test_a_volume_on_the_storage_host_moves_its_bytes_between_guests_on_two_lab_hosts(
        cloud: RunningCloud, tmp_path: Path) -> None:
    # The control host keeps the volume; each lab host's guest reaches it over NBD (TLS-PSK) on the
    # underlay, through an export the control host's agent starts for that attachment alone.
    volume = cloud.osc_json("volume", "create", "--size", "1", "labdata")
    vid = str(volume["id"])
    wait_volume(cloud, vid, "available")
    for name, host, script in (("W", "lab-h1", VOLUME_WRITER), ("R", "lab-h2", VOLUME_READER)):
        path = tmp_path / f"{name}.sh"
        path.write_text(script.format(serial=vid[:20]))
        assert create(cloud, name, "--nic", "none", "--availability-zone", f"nova:{host}",
                      "--user-data", str(path)) == host
    try:
        wait_console(cloud, "W", "YUNSTACK-READY")
        began = time.monotonic()
        cloud.osc("server", "add", "volume", "W", "labdata")
        shown = wait_volume(cloud, vid, "in-use")
        assert shown["attachments"][0]["host_name"] == "lab-h1", shown
        written = re.search(r"VOLSUM ([0-9a-f]{32})", wait_console(cloud, "W", "VOLSUM "))
        assert written is not None
        print(f"volume on the control host attached to W on lab-h1 and written {time.monotonic() - began:.1f}s "
              "after the request")
        exports = subprocess.run(["pgrep", "-f", f'"name":"{vid}"'], capture_output=True, text=True).stdout.split()
        assert len(exports) == 1, exports  # one daemon serves it, to lab-h1 alone

        cloud.osc("server", "remove", "volume", "W", "labdata")
        wait_volume(cloud, vid, "available")
        wait_console(cloud, "R", "YUNSTACK-READY")
        cloud.osc("server", "add", "volume", "R", "labdata")
        assert wait_volume(cloud, vid, "in-use")["attachments"][0]["host_name"] == "lab-h2"
        read = re.search(r"VOLREAD ([0-9a-f]{32})", wait_console(cloud, "R", "VOLREAD "))
        assert read is not None and read.group(1) == written.group(1)
        cloud.osc("server", "remove", "volume", "R", "labdata")
        wait_volume(cloud, vid, "available")
        deadline = time.monotonic() + 60
        while subprocess.run(["pgrep", "-f", f'"name":"{vid}"'], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the volume's export outlived its last attachment"
            time.sleep(0.5)
    finally:
        delete(cloud, "W", "R")
        cloud.osc("volume", "delete", vid, check=False)


def test_a_lab_host_boots_a_server_from_a_volume_the_control_host_keeps(cloud: RunningCloud) -> None:
    # The root disk is an NBD export of the control host's volume: the firmware reads the boot
    # sector through it, and the guest comes up.
    began = time.monotonic()
    assert create(cloud, "V", "--nic", "none", "--boot-from-volume", "1", "--availability-zone",
                  "nova:lab-h3") == "lab-h3"
    (attached,) = cloud.osc_json("server", "volume", "list", "V")
    vid = str(attached["Volume ID"])
    try:
        wait_console(cloud, "V", "YUNSTACK-READY")
        print(f"V booted on lab-h3 from a volume of the control host {time.monotonic() - began:.1f}s after the "
              "request")
        assert wait_volume(cloud, vid, "in-use")["attachments"][0]["host_name"] == "lab-h3"
    finally:
        delete(cloud, "V")
    wait_volume(cloud, vid, "available")  # the CLI keeps a root volume (delete_on_termination false)
    cloud.osc("volume", "delete", vid)
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-f", f'"name":"{vid}"'], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the root volume's export outlived its server"
        time.sleep(0.5)


# A guest that ticks on its console, then (after its boot) grows a working set it keeps touching.
GROWER = """#!/bin/sh
(while :; do echo "TICK $(cut -d' ' -f1 /proc/uptime)" > /dev/console; sleep 1; done) < /dev/null > /dev/null 2>&1 &
(sleep {delay}; memload --mib {mib} --pattern random --seed {seed} --touch-mib-per-s 40) < /dev/null > /dev/null 2>&1 &
"""


GUESTS = ("G1", "G2", "G3")
TRIGGER = 0.45  # the fixture's target (40 %) + the balancer's hysteresis (5 points)


def _why_not_moved(cloud: RunningCloud, server: str) -> str:
    """The server's last action with its events (a failed move says why there), and the control
    plane log's last migration lines: what a failed assertion about a move should show."""
    actions = cloud.osc_json("server", "event", "list", server)
    last = ""
    if actions:
        last = cloud.osc("server", "event", "show", server, actions[0]["Request ID"], "-f", "json").stdout
    lines = [line for line in cloud.log.read_text(errors="replace").splitlines() if "migrat" in line.lower()]
    return f"{last[-2000:]}\n" + "\n".join(lines[-15:])


def yun_json(cloud: RunningCloud, *args: str) -> Any:
    done = subprocess.run([str(BIN / "yun"), *args, "-f", "json"], env=cloud.env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_memory_balancer_in_auto_mode_moves_growing_guests_off_a_host_over_its_target(
        cloud: RunningCloud, tmp_path: Path) -> None:
    # Each lab host has a 1 GiB budget (yun up --hosts: --host-memory 1024) and the balancer's target
    # is 40 % here (the fixture's env).  Three 192 MiB guests on lab-h1 grow to 110 MiB working sets
    # each after placement (more is OOM-killed inside a 192 MiB tiny guest), ~200-260 MiB of the host
    # each with QEMU: lab-h1 crosses its trigger (45 %), and one guest per host fits under the
    # targets.  The lab
    # hosts' aggregate says auto; the control plane's own pass live-migrates guests away until every
    # host is under its trigger, moving none twice.
    cloud.osc("aggregate", "create", "balanced")
    try:
        for h in HOSTS:
            cloud.osc("aggregate", "add", "host", "balanced", h)
        cloud.osc("aggregate", "set", "--property", "yunstack:memory_balancer=auto", "balanced")
        for i, name in enumerate(GUESTS):
            script = tmp_path / f"{name}.sh"
            script.write_text(GROWER.format(mib=110, seed=i + 1, delay=15))
            assert create(cloud, name, "--flavor", "m1.micro", "--nic", "none", "--availability-zone",
                          "nova:lab-h1", "--user-data", str(script)) == "lab-h1"
        before = {name: wait_console(cloud, name, "TICK ") for name in GUESTS}
        ids = {name: cloud.osc_json("server", "show", name)["id"] for name in GUESTS}
        began = time.monotonic()
        where: dict[str, str] = {}
        plan: dict[str, Any] = {}
        while time.monotonic() < began + 360:
            shown = {name: cloud.osc_json("server", "show", name) for name in GUESTS}
            where = {name: s["OS-EXT-SRV-ATTR:host"] for name, s in shown.items()}
            plan = yun_json(cloud, "cluster", "balance")
            settled = not any(s.get("OS-EXT-STS:task_state") for s in shown.values()) and not plan["moves"]
            under = all(h["before_fraction"] <= TRIGGER for h in plan["hosts"] if h["physical"])
            if settled and under and set(where.values()) != {"lab-h1"}:
                break
            time.sleep(5)
        passes = yun_json(cloud, "cluster", "history")
        moved = sorted(n for n, h in where.items() if h != "lab-h1")
        assert moved and not plan["moves"], (where, plan["hosts"], plan["refusals"][:8],
                                             json.dumps(passes, indent=1)[:3000])
        print(f"memory balancer: {moved} moved off lab-h1 ({where}) {time.monotonic() - began:.0f}s after all ticked; "
              f"hosts now {[(h['host'], h['before_fraction']) for h in plan['hosts']]}")
        applied = [a for p in passes for a in p["applied"]]
        assert sorted(a["server_id"] for a in applied) == sorted(ids[n] for n in moved), passes
        assert all(a["result"] == "queued" for a in applied), passes
        reasons = [m["reason"] for p in passes if p["applied"] for m in p["moves"]]
        assert reasons and all("frees" in r for r in reasons), passes
        assert all(m["source"] == "lab-h1" for p in passes for m in p["moves"]), passes
        print("memory balancer moves:", "; ".join(reasons))
        assert all(h["before_fraction"] <= TRIGGER for h in plan["hosts"] if h["physical"]), \
            (plan["hosts"], plan["refusals"][:8], json.dumps(passes[-3:], indent=1)[:3000],
             {n: _why_not_moved(cloud, n) for n in GUESTS if where[n] == "lab-h1"})
        migrations = [m for m in cloud.osc_json("server", "migration", "list") if m["Status"] == "completed"]
        for name in moved:  # each moved once (its cooldown), went on ticking (no reboot), and lives
            assert len([m for m in migrations if m["Server UUID"] == ids[name]]) == 1, migrations
            ticks = [float(x) for x in re.findall(r"TICK (\d+\.\d+)", before[name])]
            after = wait_console(cloud, name, "TICK ", before=before[name])
            assert min(float(x) for x in re.findall(r"TICK (\d+\.\d+)", after)) > ticks[-1]
        for name in GUESTS:  # no guest was OOM-killed or stopped
            assert cloud.osc_json("server", "show", name)["status"] == "ACTIVE"
            assert "Out of memory" not in cloud.osc("console", "log", "show", name).stdout
    finally:
        cloud.osc("server", "delete", "--wait", *GUESTS, check=False)
        for h in HOSTS:
            cloud.osc("aggregate", "remove", "host", "balanced", h, check=False)
        cloud.osc("aggregate", "delete", "balanced", check=False)


OOM_LINE = re.compile(r"Out of memory|oom-kill|Killed process")


def host_oom_kills(cloud: RunningCloud, host: str) -> int:
    """The kernel's OOM kills so far in lab host ``host``'s budget cgroup (when its guests outgrow it),
    from its log: on cgroup v1 a kill counts in the victim's own cgroup, which goes with the guest."""
    budget = budget_cgroup(install_tag(cloud.state_dir), host.removeprefix("lab-"))
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    return len(kernel_oom_kills(kernel, {budget: host}))


def budget_fill(cloud: RunningCloud, host: str) -> float:
    """How full lab host ``host``'s memory budget is (usage over its limit)."""
    budget = Path("/sys/fs/cgroup/memory") / budget_cgroup(install_tag(cloud.state_dir), host.removeprefix("lab-"))
    return int((budget / "memory.usage_in_bytes").read_text()) / int((budget / "memory.limit_in_bytes").read_text())


def test_the_memory_balancer_in_advise_mode_only_shows_its_plan_and_the_host_it_would_relieve_fails(
        cloud: RunningCloud, tmp_path: Path) -> None:
    # The auto test's scenario, with six guests instead of three so that lab-h1's 1 GiB cannot hold
    # their grown working sets (~250 MiB of the host each), and the balancer in advise mode: it plans
    # the same kind of moves off lab-h1, flagged advisory, and applies none, so lab-h1 is left as
    # with the balancer off.  It ends in an OOM kill (the host's or a guest's own) or a stall; the
    # test says which (`yun bench density --hosts 3` measures the off arm against auto).
    cloud.osc("aggregate", "create", "advised")
    script = tmp_path / "grow.sh"
    # One request, so that all six are placed on their idle footprint before the first one grows.
    script.write_text(GROWER.format(mib=110, seed=7, delay=30))
    kills = host_oom_kills(cloud, "lab-h1")
    try:
        for h in HOSTS:
            cloud.osc("aggregate", "add", "host", "advised", h)
        cloud.osc("aggregate", "set", "--property", "yunstack:memory_balancer=advise", "advised")
        cloud.osc("server", "create", "--image", "tiny", "--flavor", "m1.micro", "--nic", "none", "--min", "6",
                  "--max", "6", "--availability-zone", "nova:lab-h1", "--user-data", str(script), "--wait", "A")
        shown = {s["Name"]: s for s in cloud.osc_json("server", "list", "--long")}
        names = sorted(n for n in shown if n.startswith("A-"))
        assert len(names) == 6 and {shown[n]["Host"] for n in names} == {"lab-h1"}, shown
        ids = {shown[n]["ID"] for n in names}
        # Observed from ACTIVE on, not from the last first tick: six guests booting under TCG can take
        # longer than the others' 30 s before they grow, and a guest still booting when the budget
        # fills is starved there (no swap in the budget: the kernel reclaims its page cache over and
        # over rather than kill anyone).  That is this host failing too, so it counts as a stall, the
        # budget's fill given as the evidence that it is memory and not a broken boot.
        began = time.monotonic()
        advised: dict[str, Any] = {}
        ended = ""
        last: dict[str, tuple[float, float]] = {}  # name -> (newest uptime, when it was first seen)
        # Both are awaited: the host may fail before the balancer's first pass over it (an OOM kill a
        # few seconds after ACTIVE), and the plan still stands after it (five grown guests are over
        # the target too).
        while not (ended and advised) and time.monotonic() < began + BOOT_TIMEOUT + 120:
            plan = yun_json(cloud, "cluster", "balance")
            if plan["moves"] and not advised:
                advised = plan
            if ended:
                time.sleep(3)
                continue
            now = time.monotonic()
            states = {s["Name"]: s["Status"] for s in cloud.osc_json("server", "list") if s["Name"] in names}
            for name in names:
                console = cloud.osc("console", "log", "show", name).stdout
                ticks = [float(x) for x in re.findall(r"TICK (\d+\.\d+)", console)]
                if ticks and max(ticks) > last.get(name, (-1.0, now))[0]:
                    last[name] = (max(ticks), now)
                if (found := OOM_LINE.search(console)) is not None:
                    ended = f"guest OOM in {name}: {found.group(0)}"
                elif states.get(name) != "ACTIVE":
                    ended = f"{name} is {states.get(name)} (its QEMU is gone)"
                elif name in last and now - last[name][1] > 30:
                    ended = f"stall: {name}'s console has not ticked for 30 s"
                elif name not in last and now - began > BOOT_TIMEOUT and budget_fill(cloud, "lab-h1") > 0.9:
                    ended = (f"stall: {name} has not finished booting {now - began:.0f} s after ACTIVE, "
                             f"lab-h1's budget {budget_fill(cloud, 'lab-h1'):.0%} full")
                if ended:
                    break
            if host_oom_kills(cloud, "lab-h1") > kills:
                ended = f"OOM kill in lab-h1's budget ({ended or 'no server changed state yet'})"
            if not (ended and advised):
                time.sleep(3)
        passes = yun_json(cloud, "cluster", "history")
        print(f"memory balancer in advise mode, six growing guests on lab-h1: {ended or 'nothing'} "
              f"{time.monotonic() - began:.0f}s after all were ACTIVE; advised "
              f"{[(m['source'], m['target'], m['reason']) for m in advised.get('moves', [])]}")
        assert ended, f"lab-h1 held six grown guests: {plan['hosts']}"
        assert advised, "the balancer planned no move off lab-h1"
        assert all(m["advisory"] and m["source"] == "lab-h1" and "frees" in m["reason"] for m in advised["moves"])
        # It queued nothing for these guests, and none moved (the module's earlier tests moved others).
        assert not [a for p in passes for a in p.get("applied", []) if a["server_id"] in ids], passes
        assert not [m for m in cloud.osc_json("server", "migration", "list") if m["Server UUID"] in ids]
    finally:
        cloud.osc("server", "delete", "--wait", *[f"A-{i}" for i in range(1, 7)], check=False)
        for h in HOSTS:
            cloud.osc("aggregate", "remove", "host", "advised", h, check=False)
        cloud.osc("aggregate", "delete", "advised", check=False)


def test_an_agent_killed_with_sigkill_leaves_its_host_down_within_30_seconds(cloud: RunningCloud) -> None:
    netns = lab_of(cloud.state_dir).host(3).netns
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True).stdout.split()
    agents = [int(p) for p in pids if b"agent" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(agents) == 1, pids
    # The moment is taken over plain HTTP (an `openstack` call takes seconds on a busy machine);
    # the CLI then shows the state.
    token = cloud.osc("token", "issue", "-f", "value", "-c", "id").stdout.strip()
    os.kill(agents[0], signal.SIGKILL)
    killed = time.monotonic()
    state = "up"
    while state != "down" and time.monotonic() - killed < 40:
        time.sleep(0.5)
        r = httpx.get(f"{cloud.url}/compute/v2.1/os-services", headers={"X-Auth-Token": token}, timeout=10)
        state = next(s["state"] for s in r.json()["services"] if s["host"] == "lab-h3")
    down_after = time.monotonic() - killed
    assert down_after <= 30, f"lab-h3 still {state} {down_after:.1f}s after its agent was killed"
    services = {s["Host"]: s["State"] for s in cloud.osc_json("compute", "service", "list")}
    assert services == {"lab-h1": "up", "lab-h2": "up", "lab-h3": "down"}
    assert hypervisors(cloud) == {"lab-h1": "up", "lab-h2": "up", "lab-h3": "down"}
    print(f"lab-h3 down {down_after:.1f}s after kill -9 of its agent")
