"""A volume's steps survive a dead agent and a dead control plane, and a failed one leaves nothing.

Each test stages what a crash leaves behind (a step held by an agent run that is gone, a step out
of attempts, an image that vanished under a queued create) and checks what the next agent run or
the lease sweep makes of it: the volume ends as a client expects, with the reason when it failed,
and the storage host keeps no half-made file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from tests.functional.compute.test_servers import Host
from tests.functional.volume.test_volume_api import Cinder, files
from yunstack.db.tables import tasks as tt
from yunstack.db.tables import volume as vt
from yunstack.wiring import Services


def _task(services: Services, volume_id: str) -> tt.Task:
    with services.db() as s:
        task = s.scalar(select(tt.Task).where(tt.Task.resource_id == volume_id).order_by(tt.Task.seq.desc()))
        assert task is not None
        return task


def test_a_create_held_by_a_dead_agent_run_is_made_by_the_next_one(world: dict[str, Any], host: Host,
                                                                  services: Services) -> None:
    alice: Cinder = world["alice"]
    host.stop()
    v = alice.create(1, name="survivor")
    with services.db.begin() as s:  # the run that claimed it died before it reported
        s.execute(update(tt.Task).where(tt.Task.resource_id == v["id"]).values(
            state="running", attempt=1, lease_owner=f"{services.config.host_name}/gone",
            lease_expires_at=datetime.now(UTC) + timedelta(minutes=5)))
    host.start()  # a new run: its predecessor's steps come back at once, not after their lease
    alice.wait(v["id"], "available")
    assert files(services) == [f"volumes/{v['id']}.qcow2"]
    assert _task(services, v["id"]).attempt == 2


def test_a_step_out_of_attempts_fails_the_volume_with_the_reason(world: dict[str, Any], host: Host,
                                                                 services: Services) -> None:
    alice: Cinder = world["alice"]
    host.stop()
    v = alice.create(1)
    with services.db.begin() as s:  # its last attempt's host went silent
        s.execute(update(tt.Task).where(tt.Task.resource_id == v["id"]).values(
            state="running", attempt=3, max_attempts=3, lease_owner=f"{services.config.host_name}/gone",
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    services.host_link.sweep()
    assert alice.get(f"/volumes/{v['id']}").json()["volume"]["status"] == "error"
    with services.db() as s:
        row = s.get(vt.Volume, v["id"])
        assert row is not None and row.status_reason and "attempt" in row.status_reason
    host.start()
    # A volume in error can be deleted, and the delete leaves nothing.
    assert alice.delete(f"/volumes/{v['id']}").status_code == 202
    alice.wait(v["id"], "gone")
    assert files(services) == []


def test_a_create_whose_image_vanished_ends_in_error_and_leaves_no_file(world: dict[str, Any], host: Host,
                                                                         services: Services) -> None:
    alice: Cinder = world["alice"]
    api = world["api"]
    admin_h = api.headers(world["admin"].token)
    r = api.http.post("/image/v2/images", json={"name": "brief", "disk_format": "raw", "container_format": "bare",
                                                "visibility": "public"}, headers=admin_h)
    image = r.json()["id"]
    api.http.put(f"/image/v2/images/{image}/file", content=b"\xab" * 65536,
                 headers={**admin_h, "Content-Type": "application/octet-stream"})
    host.stop()
    v = alice.create(1, imageRef=image)
    assert api.http.delete(f"/image/v2/images/{image}", headers=admin_h).status_code == 204
    host.start()
    failed = alice.wait(v["id"], "error")
    assert failed["bootable"] == "true"
    assert files(services) == []  # no volume file, no half-made base
    with services.db() as s:
        row = s.get(vt.Volume, v["id"])
        assert row is not None and row.status_reason and image in row.status_reason


def test_an_upload_that_fails_leaves_no_queued_image_and_the_volume_available(
        world: dict[str, Any], host: Host, services: Services) -> None:
    alice: Cinder = world["alice"]
    api = world["api"]
    v = alice.create(1)
    alice.wait(v["id"], "available")
    host.stop()
    r = alice.post(f"/volumes/{v['id']}/action", {"os-volume_upload_image": {"image_name": "doomed"}})
    assert r.status_code == 202, r.text
    image_id = r.json()["os-volume_upload_image"]["image_id"]
    (services.config.volumes_path / "volumes" / f"{v['id']}.qcow2").unlink()  # gone behind the cloud's back
    host.start()
    alice.wait(v["id"], "available")
    assert api.http.get(f"/image/v2/images/{image_id}", headers=api.headers(alice.token)).status_code == 404
    with services.db() as s:
        row = s.get(vt.Volume, v["id"])
        assert row is not None and row.status_reason and image_id in row.status_reason
