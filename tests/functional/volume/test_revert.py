"""Cinder 3.40's revert to the latest snapshot, with the real `file` backend: the bytes come back."""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.functional.compute.test_servers import WAIT
from tests.functional.volume.test_attachments_api import SERVER
from tests.functional.volume.test_volume_api import Cinder, volumes_dir
from yunstack.db.tables import tasks as tt
from yunstack.types import utcnow
from yunstack.volume import revert
from yunstack.wiring import Services

K64 = 64 * 1024


def _io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


def _write(path: Path, pattern: int, offset: int = 0) -> None:
    done = _io(path, f"write -P {pattern:#x} {offset} {K64}")
    assert done.returncode == 0 and "error" not in done.stdout.lower(), done.stdout + done.stderr


def _holds(path: Path, pattern: int, offset: int = 0) -> bool:
    done = _io(path, f"read -P {pattern:#x} {offset} {K64}")
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def _snapshot(alice: Cinder, volume_id: str, name: str) -> dict[str, Any]:
    r = alice.post("/snapshots", {"snapshot": {"volume_id": volume_id, "name": name}})
    assert r.status_code == 202, r.text
    return alice.wait(r.json()["snapshot"]["id"], "available", "snapshots")


def test_revert_brings_back_the_latest_snapshot_s_bytes_from_3_40(world: dict[str, Any], services: Services) -> None:
    alice: Cinder = world["alice"]
    v = alice.create(1, name="data")
    alice.wait(v["id"], "available")
    path = volumes_dir(services) / "volumes" / f"{v['id']}.qcow2"
    _write(path, 0x11)
    first = _snapshot(alice, v["id"], "first")
    _write(path, 0x22)
    latest = _snapshot(alice, v["id"], "latest")
    _write(path, 0x33)
    _write(path, 0x44, K64)
    action = f"/volumes/{v['id']}/action"
    revert = {"revert": {"snapshot_id": latest["id"]}}
    assert alice.at("3.39").post(action, revert).status_code == 404  # no such action before 3.40
    assert _holds(path, 0x33)
    # Only the latest snapshot (Cinder's 400s).
    r = alice.at("3.40").post(action, {"revert": {"snapshot_id": first["id"]}})
    assert r.status_code == 400 and "not the latest one" in r.text, r.text
    assert alice.at("3.40").post(action, {"revert": {}}).status_code == 400
    assert alice.at("3.40").post(action, {"revert": {"snapshot_id": latest["id"], "x": 1}}).status_code == 400
    r = alice.at("3.40").post(action, revert)
    assert r.status_code == 202, r.text
    assert alice.get(f"/volumes/{v['id']}").json()["volume"]["status"] in ("reverting", "available")
    shown = alice.wait(v["id"], "available")
    assert shown["size"] == 1
    assert alice.get(f"/snapshots/{latest['id']}").json()["snapshot"]["status"] == "available"
    assert _holds(path, 0x22)  # the bytes of snapshot time
    assert _holds(path, 0, K64)  # written after it: gone
    # The volume goes on; the snapshot is as it was (a volume made from it holds its bytes).
    _write(path, 0x55)
    r = alice.post("/volumes", {"volume": {"size": 1, "snapshot_id": latest["id"]}})
    assert r.status_code == 202, r.text
    made = alice.wait(r.json()["volume"]["id"], "available")
    assert _holds(volumes_dir(services) / "volumes" / f"{made['id']}.qcow2", 0x22)
    assert _holds(path, 0x55)


def test_revert_is_refused_without_snapshots_after_an_extend_and_unless_available(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    rita: Cinder = world["rita"]
    v = alice.at("3.40").create(1)
    alice.wait(v["id"], "available")
    action = f"/volumes/{v['id']}/action"
    r = alice.at("3.40").post(action, {"revert": {"snapshot_id": v["id"]}})
    assert r.status_code == 400 and "doesn't have any snapshots" in r.text, r.text
    snap = _snapshot(alice, v["id"], "s")
    revert = {"revert": {"snapshot_id": snap["id"]}}
    assert rita.at("3.40").post(action, revert).status_code == 403  # readers only read
    assert world["bob"].at("3.40").post(action, revert).status_code == 404  # another project's volume
    # The volume must be available, and the snapshot too (409, Cinder's InvalidVolume/InvalidSnapshot).
    assert admin.post(action, {"os-reset_status": {"status": "error"}}).status_code == 202
    r = alice.at("3.40").post(action, revert)
    assert r.status_code == 409 and "Volume's status must be 'available'" in r.text, r.text
    assert admin.post(action, {"os-reset_status": {"status": "available"}}).status_code == 202
    snap_action = f"/snapshots/{snap['id']}/action"
    assert admin.post(snap_action, {"os-reset_status": {"status": "error"}}).status_code == 202
    r = alice.at("3.40").post(action, revert)
    assert r.status_code == 409 and "Snapshot's status must be 'available'" in r.text, r.text
    assert admin.post(snap_action, {"os-reset_status": {"status": "available"}}).status_code == 202
    # A volume extended since its snapshot cannot go back to it.
    assert alice.post(action, {"os-extend": {"new_size": 2}}).status_code == 202
    alice.wait(v["id"], "available")
    r = alice.at("3.40").post(action, revert)
    assert r.status_code == 400 and "size must be equal" in r.text, r.text


def test_an_attach_that_comes_between_a_reverts_checks_and_its_start_wins(
        world: dict[str, Any], services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: a revert checked "available", then an attach reserved the volume before the
    revert marked it.  Had both gone ahead, the storage host would rewrite a disk a guest uses."""
    alice: Cinder = world["alice"]
    v = alice.create(1, name="raced")
    alice.wait(v["id"], "available")
    snap = _snapshot(alice, v["id"], "s")
    checked, release = threading.Event(), threading.Event()

    def held() -> datetime:  # called once the revert's checks passed, before it takes the volume
        checked.set()
        assert release.wait(WAIT)
        return utcnow()

    monkeypatch.setattr(revert, "utcnow", held)
    with ThreadPoolExecutor(1) as pool:
        reverting = pool.submit(alice.at("3.40").post, f"/volumes/{v['id']}/action",
                                {"revert": {"snapshot_id": snap["id"]}})
        assert checked.wait(WAIT)
        r = alice.at("3.27").post("/attachments", {"attachment": {"volume_uuid": v["id"], "instance_uuid": SERVER}})
        assert r.status_code == 200, r.text
        release.set()
        refused = reverting.result(WAIT)
    assert refused.status_code == 409 and "Volume's status must be 'available'" in refused.text, refused.text
    assert alice.get(f"/volumes/{v['id']}").json()["volume"]["status"] == "reserved"
    assert alice.get(f"/snapshots/{snap['id']}").json()["snapshot"]["status"] == "available"
    with services.db() as s:  # and no revert step was queued for the storage host
        assert s.scalar(select(func.count()).select_from(tt.Task).where(tt.Task.resource_id == v["id"],
                                                                       tt.Task.kind.contains("revert"))) == 0
