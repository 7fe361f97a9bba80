"""The real `openstack` CLI drives a real `yun up` with real QEMU: images, flavors, keypairs, servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud import RunningCloud, serving_cloud, start_cloud

pytestmark = pytest.mark.integration


def qemu_pids(server_id: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"guest={server_id}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_status(cloud: RunningCloud, server: str, status: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = cloud.osc_json("server", "show", server)
        if last["status"] == status:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{server} is {last.get('status')}, not {status}: {last.get('fault')}")


def console(cloud: RunningCloud, server: str) -> str:
    return cloud.osc("console", "log", "show", server).stdout


def wait_console(cloud: RunningCloud, server: str, marker: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(cloud, server)
        if marker in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{marker!r} not on {server}'s console:\n{text[-2000:]}")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("compute")) as running:
        yield running


def test_image_lifecycle_with_the_tiny_image(cloud: RunningCloud) -> None:
    tiny = cloud.state_dir / "tiny-image" / "tiny.qcow2"
    made = cloud.osc_json("image", "create", "--file", str(tiny), "--disk-format", "qcow2", "mytiny")
    assert made["status"] == "active" and made["disk_format"] == "qcow2"
    assert "mytiny" in {i["Name"] for i in cloud.osc_json("image", "list")}
    shown = cloud.osc_json("image", "show", "mytiny")
    assert shown["size"] == tiny.stat().st_size and shown["checksum"]
    cloud.osc("image", "delete", "mytiny")
    assert "mytiny" not in {i["Name"] for i in cloud.osc_json("image", "list")}


def test_an_image_whose_bytes_are_not_its_format_is_refused(cloud: RunningCloud, tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(os.urandom(1 << 16))
    done = cloud.osc("image", "create", "--file", str(junk), "--disk-format", "qcow2", "junk", check=False)
    assert done.returncode != 0
    assert "does not match" in done.stderr or "415" in done.stderr
    assert "junk" not in {i["Name"] for i in cloud.osc_json("image", "list")}


def test_flavor_and_keypair(cloud: RunningCloud) -> None:
    cloud.osc("flavor", "create", "--vcpus", "1", "--ram", "160", "--disk", "1", "t.small")
    assert "t.small" in {f["Name"] for f in cloud.osc_json("flavor", "list")}
    pub = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(cloud.state_dir / "kp"),
                          "-C", "kp1"], capture_output=True)
    assert pub.returncode == 0, pub.stderr
    cloud.osc("keypair", "create", "--public-key", str(cloud.state_dir / "kp.pub"), "kp1")
    assert "kp1" in {k["Name"] for k in cloud.osc_json("keypair", "list")}


def test_server_boots_reads_metadata_and_runs_user_data_then_lives_its_lifecycle(
        cloud: RunningCloud, tmp_path: Path) -> None:
    user_data = tmp_path / "ud.sh"
    user_data.write_text("#!/bin/sh\necho hello-from-user-data-$(hostname)\n")
    made = cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--key-name", "kp1",
                          "--user-data", str(user_data), "--wait", "vm-life")
    assert made["status"] == "ACTIVE"
    sid = str(made["id"])
    log = wait_console(cloud, "vm-life", "YUNSTACK-READY")
    assert "YUNSTACK-METADATA" in log and "hostname=vm-life" in log
    assert "hello-from-user-data-vm-life" in log
    assert "YUNSTACK-USERDATA-END rc=0" in log
    assert len(qemu_pids(sid)) == 1
    disk = cloud.state_dir / "instances" / sid / "disk.qcow2"
    assert disk.exists()

    cloud.osc("server", "stop", "vm-life")
    wait_status(cloud, "vm-life", "SHUTOFF")
    assert qemu_pids(sid) == [] and disk.exists()
    cloud.osc("server", "start", "vm-life")
    wait_status(cloud, "vm-life", "ACTIVE")
    assert len(qemu_pids(sid)) == 1

    cloud.osc("server", "reboot", "vm-life")
    wait_status(cloud, "vm-life", "ACTIVE")
    cloud.osc("server", "pause", "vm-life")
    wait_status(cloud, "vm-life", "PAUSED")
    cloud.osc("server", "unpause", "vm-life")
    wait_status(cloud, "vm-life", "ACTIVE")

    events = {e["Action"] for e in cloud.osc_json("server", "event", "list", "vm-life")}
    assert {"create", "stop", "start", "reboot", "pause", "unpause"} <= events

    cloud.osc("server", "delete", "--wait", "vm-life")
    assert cloud.osc("server", "show", sid, check=False).returncode != 0
    assert qemu_pids(sid) == []
    assert not (cloud.state_dir / "instances" / sid).exists()


def test_servers_survive_a_control_plane_restart_and_a_killed_guest_shows_shutoff(cloud: RunningCloud) -> None:
    ids = []
    for name in ("keep-1", "keep-2", "keep-3"):
        ids.append(str(cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", name)["id"]))
    for name in ("keep-1", "keep-2", "keep-3"):
        wait_status(cloud, name, "ACTIVE", timeout=90)
    before = {sid: qemu_pids(sid) for sid in ids}
    assert all(len(p) == 1 for p in before.values())

    assert cloud.stop() == 0
    assert {sid: qemu_pids(sid) for sid in ids} == before  # guests outlive the control plane
    restarted = start_cloud(cloud.state_dir, cloud.port, timeout=120)
    cloud.proc = restarted.proc

    for name in ("keep-1", "keep-2", "keep-3"):
        assert cloud.osc_json("server", "show", name)["status"] == "ACTIVE"
    assert {sid: qemu_pids(sid) for sid in ids} == before  # adopted, not duplicated
    # QMP is reattached: a pause and an unpause go through on an adopted guest.
    cloud.osc("server", "pause", "keep-1")
    wait_status(cloud, "keep-1", "PAUSED")
    cloud.osc("server", "unpause", "keep-1")
    wait_status(cloud, "keep-1", "ACTIVE")

    os.kill(before[ids[1]][0], signal.SIGKILL)
    began = time.monotonic()
    wait_status(cloud, "keep-2", "SHUTOFF", timeout=10)
    assert time.monotonic() - began < 10
    for name in ("keep-1", "keep-2", "keep-3"):
        cloud.osc("server", "delete", "--wait", name)


def test_scheduling_failure_names_every_host_and_why(cloud: RunningCloud) -> None:
    cloud.osc("flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", "900000", "t.hugedisk")
    done = cloud.osc("server", "create", "--image", "tiny", "--flavor", "t.hugedisk", "--wait", "nohost",
                     check=False)
    assert done.returncode != 0
    shown = cloud.osc_json("server", "show", "nohost")
    assert shown["status"] == "ERROR"
    fault = json.dumps(shown["fault"])
    host = cloud.osc_json("hypervisor", "list")[0]["Hypervisor Hostname"]
    assert "No valid host" in fault and host in fault and "DiskFilter" in fault
    cloud.osc("server", "delete", "--wait", "nohost")


def test_exceeding_a_quota_is_403_naming_the_quota(cloud: RunningCloud) -> None:
    cloud.osc("quota", "set", "--instances", "1", "demo")
    try:
        first = cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "q-1",
                               cloud="yunstack-demo")
        second = cloud.osc("server", "create", "--image", "tiny", "--flavor", "m1.nano", "q-2",
                           cloud="yunstack-demo", check=False)
        assert second.returncode != 0
        assert "403" in second.stderr and "instances" in second.stderr
        cloud.osc("server", "delete", "--wait", str(first["id"]), cloud="yunstack-demo")
    finally:
        cloud.osc("quota", "set", "--instances", "10", "demo")
