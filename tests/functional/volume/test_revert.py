"""Cinder 3.40's revert to the latest snapshot, with the real `file` backend: the bytes come back."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.functional.volume.test_volume_api import Cinder, volumes_dir
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
