"""The real `openstack` CLI on a real `yun up` with real QEMU: rebuild, lock, shelve, rescue.

Each server is the tiny image, whose console prints a READY marker at every boot, so a fresh boot
is visible as one more marker (the console log is kept across the guest's restarts).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud import RunningCloud, serving_cloud
from tests.integration.test_openstack_cli_compute import console, qemu_pids, wait_console, wait_status

pytestmark = pytest.mark.integration
READY = "YUNSTACK-READY"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("actions")) as running:
        yield running


def boots(cloud: RunningCloud, server: str) -> int:
    return console(cloud, server).count(READY)


def wait_boots(cloud: RunningCloud, server: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while boots(cloud, server) < count:
        assert time.monotonic() < deadline, f"{server} did not boot {count} times:\n{console(cloud, server)[-2000:]}"
        time.sleep(0.5)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def backing_file(disk: Path) -> str:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], check=True,
                         capture_output=True, text=True).stdout
    return str(json.loads(out)["backing-filename"])


def boot(cloud: RunningCloud, name: str, who: str = "yunstack") -> str:
    made = cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--wait", name, cloud=who)
    assert made["status"] == "ACTIVE"
    wait_console(cloud, str(made["id"]), READY, timeout=120)
    return str(made["id"])


def test_rebuild_reimages_the_server_and_the_guest_boots_the_new_image(cloud: RunningCloud) -> None:
    tiny = cloud.state_dir / "tiny-image" / "tiny.qcow2"
    other = cloud.osc_json("image", "create", "--file", str(tiny), "--disk-format", "qcow2", "--public", "tiny2")
    sid = boot(cloud, "vm-rebuild")
    [old_pid] = qemu_pids(sid)
    disk = cloud.state_dir / "instances" / sid / "disk.qcow2"
    assert not backing_file(disk).endswith(str(other["id"]))

    cloud.osc("server", "rebuild", "--image", "tiny2", "--wait", "vm-rebuild")
    shown = wait_status(cloud, "vm-rebuild", "ACTIVE")
    assert str(other["id"]) in str(shown["image"])
    wait_boots(cloud, sid, 2)  # a fresh boot, from a fresh disk on the new image
    assert backing_file(disk).endswith(str(other["id"]))
    [new_pid] = qemu_pids(sid)
    assert new_pid != old_pid
    assert "rebuild" in {e["Action"] for e in cloud.osc_json("server", "event", "list", "vm-rebuild")}
    cloud.osc("server", "delete", "--wait", "vm-rebuild")


def test_a_locked_server_refuses_its_member_until_unlocked(cloud: RunningCloud) -> None:
    demo = "yunstack-demo"
    sid = boot(cloud, "vm-locked", who=demo)
    cloud.osc("server", "lock", "vm-locked", cloud=demo)
    shown = cloud.osc_json("--os-compute-api-version", "2.9", "server", "show", "vm-locked", cloud=demo)
    assert shown["locked"] is True
    refused = cloud.osc("server", "stop", "vm-locked", cloud=demo, check=False)
    assert refused.returncode != 0 and "is locked" in refused.stderr
    refused = cloud.osc("server", "delete", "vm-locked", cloud=demo, check=False)
    assert refused.returncode != 0 and "is locked" in refused.stderr
    assert len(qemu_pids(sid)) == 1
    cloud.osc("server", "unlock", "vm-locked", cloud=demo)
    cloud.osc("server", "stop", "vm-locked", cloud=demo)
    wait_status(cloud, sid, "SHUTOFF")  # by id: the admin cloud does not list the demo project's names
    assert qemu_pids(sid) == []
    cloud.osc("server", "delete", "--wait", "vm-locked", cloud=demo)


def test_shelve_takes_the_guest_off_the_host_and_unshelve_brings_it_back(cloud: RunningCloud) -> None:
    sid = boot(cloud, "vm-shelf")
    instance_dir = cloud.state_dir / "instances" / sid
    cloud.osc("server", "shelve", "vm-shelf")
    shown = wait_status(cloud, "vm-shelf", "SHELVED_OFFLOADED", timeout=180)
    assert shown["OS-EXT-SRV-ATTR:host"] is None
    assert qemu_pids(sid) == [] and not instance_dir.exists()  # QEMU, disk and files are gone
    images = {i["Name"]: i for i in cloud.osc_json("image", "list")}
    assert images["vm-shelf-shelved"]["Status"] == "active"

    cloud.osc("server", "unshelve", "vm-shelf")
    wait_status(cloud, "vm-shelf", "ACTIVE", timeout=180)
    assert len(qemu_pids(sid)) == 1 and (instance_dir / "disk.qcow2").exists()
    wait_console(cloud, "vm-shelf", READY, timeout=120)
    assert "vm-shelf-shelved" not in {i["Name"] for i in cloud.osc_json("image", "list")}
    actions = {e["Action"] for e in cloud.osc_json("server", "event", "list", "vm-shelf")}
    assert {"shelve", "unshelve"} <= actions
    cloud.osc("server", "delete", "--wait", "vm-shelf")


def test_rescue_boots_the_rescue_disk_and_unrescue_the_own_disk(cloud: RunningCloud) -> None:
    sid = boot(cloud, "vm-rescue")
    cloud.osc("server", "rescue", "vm-rescue")
    wait_status(cloud, "vm-rescue", "RESCUE", timeout=120)
    [pid] = qemu_pids(sid)
    argv = cmdline(pid)
    assert argv.index("disk.rescue.qcow2") < argv.index("disk.qcow2,")  # boots the rescue disk, own disk second
    wait_boots(cloud, sid, 2)
    cloud.osc("server", "unrescue", "vm-rescue")
    wait_status(cloud, "vm-rescue", "ACTIVE", timeout=120)
    [pid] = qemu_pids(sid)
    assert "disk.rescue" not in cmdline(pid)
    wait_boots(cloud, sid, 3)
    actions = {e["Action"] for e in cloud.osc_json("server", "event", "list", "vm-rescue")}
    assert {"rescue", "unrescue"} <= actions
    cloud.osc("server", "delete", "--wait", "vm-rescue")
