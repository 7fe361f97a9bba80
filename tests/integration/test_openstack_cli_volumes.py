"""The real `openstack` CLI on a real `yun up` with real QEMU: a volume's bytes move between guests,
and a guest boots from a volume.

A volume is made, hot-plugged into a running tiny guest (which finds it by its serial, the volume's
id), written with a checksummed pattern from inside the guest, grown while attached with `yun volume
extend` and with `openstack --os-volume-api-version 3.42 volume set --size` (the guest sees each new
size), refused a delete while in use, unplugged (the guest acknowledges the unplug), plugged into a
second guest that reads the same checksum, snapshotted, overwritten by that guest, reverted to the
snapshot (`openstack --os-volume-api-version 3.40 volume revert`) and read back with the first
checksum, and everything deleted leaves no file on the storage host.  A server created with
``--boot-from-volume`` boots from the volume (its only disk), is deleted, and the kept volume,
snapshotted, boots a second server that reads what the first wrote.  The guests are driven through
their serial consoles.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.cloud import BIN, RunningCloud, serving_cloud
from tests.contract.conftest import CephLab, ceph_lab  # noqa: F401  (ceph_lab: a fixture)
from tests.integration.test_openstack_cli_compute import wait_console

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("volumes")) as running:
        yield running


def shell(cloud: RunningCloud, server: str, command: str, timeout: float = 90) -> str:
    """Run ``command`` in the guest's serial shell; returns what it printed between two markers."""
    tag = uuid.uuid4().hex[:8]
    url = cloud.osc_json("console", "url", "show", "--serial", server)["url"]
    seen = b""
    pattern = re.compile(rf"BEGIN-{tag}\r?\n(.*?)END-{tag}".encode(), re.S)
    with connect(url, subprotocols=["binary"], open_timeout=10) as ws:  # type: ignore[list-item]
        deadline = time.monotonic() + timeout
        typed_at = 0.0
        while True:
            found = pattern.search(seen)
            if found:
                return found.group(1).decode(errors="replace")
            assert time.monotonic() < deadline, f"no answer to {command!r}: {seen[-800:]!r}"
            if time.monotonic() - typed_at > 15:  # the shell may still be starting: type again
                # The markers are built by the shell, so the echo of the typed line never matches.
                ws.send(f"T={tag}; echo BEGIN-$T; {command}; echo END-$T\n".encode())
                typed_at = time.monotonic()
            try:
                data = ws.recv(timeout=1)
            except TimeoutError:
                continue
            seen += data if isinstance(data, bytes) else data.encode()


def wait_volume(cloud: RunningCloud, volume: str, status: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = cloud.osc_json("volume", "show", volume)
        if last["status"] == status:
            return last
        time.sleep(0.5)
    raise AssertionError(f"volume {volume} is {last.get('status')}, not {status}")


def wait_snapshot(cloud: RunningCloud, snapshot: str, status: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = cloud.osc_json("volume", "snapshot", "show", snapshot)
        if last["status"] == status:
            return last
        time.sleep(0.5)
    raise AssertionError(f"snapshot {snapshot} is {last.get('status')}, not {status}")


def device_of(cloud: RunningCloud, server: str, volume_id: str) -> str:
    """The guest's name for the disk whose serial is the volume's id (virtio-blk shows 20 characters)."""
    out = shell(cloud, server, "for d in /sys/block/vd*; do echo $(basename $d)=$(cat $d/serial); done")
    for line in out.splitlines():
        name, _, serial = line.strip().partition("=")
        if serial and volume_id.startswith(serial):
            return name
    raise AssertionError(f"no disk with serial {volume_id[:20]} in {server}: {out!r}")


def test_a_volumes_bytes_go_from_one_guest_to_another(cloud: RunningCloud) -> None:
    _bytes_go_from_one_guest_to_another(cloud)
    left = [p for p in (cloud.state_dir / "volumes").rglob("*") if p.is_file()]
    assert left == []


@pytest.fixture(scope="module")
def rbd_cloud(tmp_path_factory: pytest.TempPathFactory,
              ceph_lab: CephLab) -> Iterator[tuple[RunningCloud, str]]:  # noqa: F811
    """A `yun up` whose volumes are RBD images in a namespace of its own of the session's Ceph cluster."""
    namespace = ceph_lab.new_namespace()
    env = {"YUN_VOLUME_BACKEND": "rbd", "YUN_VOLUME_RBD_POOL": ceph_lab.pool, "YUN_VOLUME_RBD_USER": ceph_lab.user,
           "YUN_VOLUME_RBD_CONF": ceph_lab.conf, "YUN_VOLUME_RBD_NAMESPACE": namespace}
    with serving_cloud(tmp_path_factory.mktemp("volumes-rbd"), env=env) as running:
        yield running, namespace


def test_the_same_bytes_move_between_guests_on_the_rbd_backend(rbd_cloud: tuple[RunningCloud, str],
                                                               ceph_lab: CephLab) -> None:  # noqa: F811
    cloud, namespace = rbd_cloud
    _bytes_go_from_one_guest_to_another(cloud, live_snapshot=True)
    assert ceph_lab.ls(namespace) == []  # no RBD image or snapshot left


def _bytes_go_from_one_guest_to_another(cloud: RunningCloud, *, live_snapshot: bool = False) -> None:
    volume = cloud.osc_json("volume", "create", "--size", "1", "data")
    vid = str(volume["id"])
    wait_volume(cloud, vid, "available")
    for name in ("vol-a", "vol-b"):
        cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--wait", name)
    for name in ("vol-a", "vol-b"):
        wait_console(cloud, name, "YUNSTACK-READY", timeout=240)

    cloud.osc("server", "add", "volume", "vol-a", "data")
    shown = wait_volume(cloud, vid, "in-use")
    assert shown["attachments"], shown
    disk = device_of(cloud, "vol-a", vid)
    written = shell(cloud, "vol-a", f"dd if=/dev/urandom of=/dev/{disk} bs=1M count=4 2>/dev/null; sync; "
                                    f"dd if=/dev/{disk} bs=1M count=4 2>/dev/null | md5sum")
    checksum = written.split()[0]
    assert re.fullmatch(r"[0-9a-f]{32}", checksum), written

    # Grown while attached: the guest sees the new size at once (in 512-byte sectors).  `yun volume
    # extend` and the openstack CLI both ask for volume 3.42, Cinder's in-use extend (the CLI refuses
    # an in-use volume below it on its own side).
    grow = subprocess.run([str(BIN / "yun"), "volume", "extend", "data", "2", "--wait", "--state-dir",
                           str(cloud.state_dir)], capture_output=True, text=True, timeout=120)
    assert grow.returncode == 0, grow.stdout + grow.stderr
    assert wait_volume(cloud, vid, "in-use")["size"] == 2
    assert shell(cloud, "vol-a", f"cat /sys/block/{disk}/size").strip() == str((2 << 30) // 512)
    cloud.osc("--os-volume-api-version", "3.42", "volume", "set", "--size", "3", "data")
    deadline = time.monotonic() + 60
    while (shown := wait_volume(cloud, vid, "in-use"))["size"] != 3:
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    assert shell(cloud, "vol-a", f"cat /sys/block/{disk}/size").strip() == str((3 << 30) // 512)

    refused = cloud.osc("volume", "delete", "data", check=False)
    assert refused.returncode != 0 and "in-use" in (refused.stderr + refused.stdout)

    # A snapshot of the volume the running guest writes to: RBD takes it (crash-consistent); the file
    # backend freezes closed files only, and says so.
    forced = cloud.osc("volume", "snapshot", "create", "--force", "--volume", "data", "live", check=False)
    if live_snapshot:
        assert forced.returncode == 0, forced.stderr
        deadline = time.monotonic() + 60
        while cloud.osc_json("volume", "snapshot", "show", "live")["status"] != "available":
            assert time.monotonic() < deadline, "the live snapshot never became available"
            time.sleep(0.5)
        cloud.osc("volume", "snapshot", "delete", "live")
        while cloud.osc("volume", "snapshot", "show", "live", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the live snapshot was never deleted"
            time.sleep(0.5)
    else:
        assert forced.returncode != 0 and "not stopped" in (forced.stderr + forced.stdout)

    cloud.osc("server", "remove", "volume", "vol-a", "data")
    wait_volume(cloud, vid, "available")
    cloud.osc("server", "add", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "in-use")
    disk_b = device_of(cloud, "vol-b", vid)
    read = shell(cloud, "vol-b", f"dd if=/dev/{disk_b} bs=1M count=4 2>/dev/null | md5sum")
    assert read.split()[0] == checksum

    cloud.osc("server", "remove", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "available")

    # Reverted to its latest snapshot (3.40): what the guest wrote after it is gone.
    cloud.osc_json("volume", "snapshot", "create", "--volume", "data", "before")
    wait_snapshot(cloud, "before", "available")
    cloud.osc("server", "add", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "in-use")
    disk_b = device_of(cloud, "vol-b", vid)
    zeroed = shell(cloud, "vol-b", f"dd if=/dev/zero of=/dev/{disk_b} bs=1M count=4 2>/dev/null; sync; "
                                   f"dd if=/dev/{disk_b} bs=1M count=4 2>/dev/null | md5sum")
    assert zeroed.split()[0] != checksum, zeroed
    cloud.osc("server", "remove", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "available")
    cloud.osc("--os-volume-api-version", "3.40", "volume", "revert", "before")
    wait_volume(cloud, vid, "available")
    wait_snapshot(cloud, "before", "available")
    cloud.osc("server", "add", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "in-use")
    disk_b = device_of(cloud, "vol-b", vid)
    read = shell(cloud, "vol-b", f"dd if=/dev/{disk_b} bs=1M count=4 2>/dev/null | md5sum")
    assert read.split()[0] == checksum, read
    cloud.osc("server", "remove", "volume", "vol-b", "data")
    wait_volume(cloud, vid, "available")
    cloud.osc("volume", "snapshot", "delete", "before")
    deadline = time.monotonic() + 60
    while cloud.osc("volume", "snapshot", "show", "before", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the snapshot was never deleted"
        time.sleep(0.5)
    for name in ("vol-a", "vol-b"):
        cloud.osc("server", "delete", "--wait", name)
    cloud.osc("volume", "delete", "data")
    deadline = time.monotonic() + 30
    while cloud.osc("volume", "show", vid, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the volume was never deleted"
        time.sleep(0.5)


def test_a_server_boots_from_a_volume_and_the_volume_boots_again_with_its_data(cloud: RunningCloud) -> None:
    # `--boot-from-volume 1`: the image becomes a 1 GiB volume (a copy-on-write layer on it) that the
    # guest boots from; the CLI keeps the volume when the server goes (delete_on_termination false).
    server = cloud.osc_json("server", "create", "--image", "tiny", "--boot-from-volume", "1", "--flavor", "m1.nano",
                            "--wait", "bfv-a")
    assert server["image"] in ("", None) or "booted from volume" in str(server["image"]).lower(), server
    (attached,) = cloud.osc_json("server", "volume", "list", "bfv-a")
    vid = str(attached["Volume ID"])
    assert wait_volume(cloud, vid, "in-use")["bootable"] in (True, "true")
    wait_console(cloud, "bfv-a", "YUNSTACK-READY", timeout=240)
    # The guest booted from the volume: it is the only disk besides the config drive (the tiny guest
    # runs from RAM, so a marker goes to the disk itself, 512 MiB in: past the image's own bytes).
    root = device_of(cloud, "bfv-a", vid)
    disks = shell(cloud, "bfv-a", "for d in /sys/block/vd*; do echo $(basename $d)=$(cat $d/serial); done").split()
    others = [d for d in disks if not d.startswith(f"{root}=")]
    assert len(others) <= 1 and all(d.endswith("=") for d in others), disks  # at most the config drive
    wrote = shell(cloud, "bfv-a", f"echo bfv-$((6 * 7)) | dd of=/dev/{root} bs=512 seek=1048576 conv=sync,fsync; "
                                  f"sync; dd if=/dev/{root} bs=512 skip=1048576 count=1 2>/dev/null | head -c 6")
    assert "bfv-42" in wrote, wrote
    cloud.osc("server", "delete", "--wait", "bfv-a")
    wait_volume(cloud, vid, "available")

    # Snapshot it, and boot the volume again: its data is there.
    cloud.osc_json("volume", "snapshot", "create", "--volume", vid, "bfv-snap")
    snap = cloud.osc_json("volume", "snapshot", "show", "bfv-snap")
    deadline = time.monotonic() + 60
    while snap["status"] != "available":
        assert time.monotonic() < deadline, snap
        time.sleep(0.5)
        snap = cloud.osc_json("volume", "snapshot", "show", "bfv-snap")
    copy = cloud.osc_json("volume", "create", "--snapshot", "bfv-snap", "bfv-copy")
    wait_volume(cloud, str(copy["id"]), "available")
    cloud.osc_json("server", "create", "--volume", vid, "--flavor", "m1.nano", "--wait", "bfv-b")
    wait_console(cloud, "bfv-b", "YUNSTACK-READY", timeout=240)
    again = device_of(cloud, "bfv-b", vid)
    marker = shell(cloud, "bfv-b", f"dd if=/dev/{again} bs=512 skip=1048576 count=1 2>/dev/null | head -c 6")
    assert marker.strip() == "bfv-42", marker

    cloud.osc("server", "delete", "--wait", "bfv-b")
    wait_volume(cloud, vid, "available")
    cloud.osc("volume", "delete", "bfv-copy")
    cloud.osc("volume", "snapshot", "delete", "bfv-snap")
    deadline = time.monotonic() + 60
    while cloud.osc("volume", "snapshot", "show", "bfv-snap", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the snapshot was never deleted"
        time.sleep(0.5)
    cloud.osc("volume", "delete", vid)
    deadline = time.monotonic() + 60
    while cloud.osc("volume", "list", "-f", "value", "-c", "ID").stdout.strip():
        assert time.monotonic() < deadline, "the volumes were never deleted"
        time.sleep(0.5)
    left = [p for p in (cloud.state_dir / "volumes").rglob("*") if p.is_file()]
    assert left == []
