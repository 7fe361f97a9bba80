"""Boot from volume: the volumes of a server's block device mapping (Nova's BDM v2, destination ``volume``).

At create each mapping becomes a volume the server holds: an existing volume is taken at once
(``attaching``); one made from an image, a snapshot or nothing is created by the volume service
with a ``reserved`` attachment in the same transaction, so nobody else can take it when it is
ready.  The server waits in BUILD (task ``block_device_mapping``) until its last volume is made;
the volume service says so (``volume_done``) and the spawn is queued then, or the server goes to
ERROR with the volume's reason.  The guest has them from its boot on (``SpecData.volumes``); a
root volume (boot index 0) replaces the local disk: such a server shows ``image`` as ``""`` and
takes no local disk of its host, as on Nova.

Until the network data path (the design's fourth slice) such servers run on the storage host,
which opens the volumes' own files; the scheduler says so for every other host.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, states
from yunstack.compute.driver import disk_device_name
from yunstack.compute.operations import Operation
from yunstack.config import Config
from yunstack.db.tables import compute as t
from yunstack.db.tables import volume as vt
from yunstack.errors import BadRequest, Conflict, NotFound, YunError
from yunstack.identity.context import AuthContext
from yunstack.protocol import SpawnArgs
from yunstack.types import new_uuid
from yunstack.volume import attachments
from yunstack.volume import operations as volume_operations
from yunstack.volume import states as vs
from yunstack.volume.backend import GIB, LIVE_SNAPSHOTS, reached_directly

log = logging.getLogger(__name__)

Source = Literal["image", "volume", "snapshot", "blank"]


@dataclass(frozen=True, kw_only=True)
class BlockDevice:
    """One volume of a server's block device mapping (the API checked its shape)."""

    source: Source
    uuid: str | None  # the image, volume or snapshot; None for a blank volume
    boot_index: int | None  # 0: the root disk; None: not bootable
    size_gib: int | None  # the new volume's size (image and blank need it; a snapshot's is the default)
    delete_on_termination: bool
    volume_type: str | None = None


def guest_order(devices: Sequence[BlockDevice]) -> list[BlockDevice]:
    """The order the guest sees them in: the root first, then by boot index, then as listed."""
    indexed = sorted(enumerate(devices), key=lambda p: (p[1].boot_index is None, p[1].boot_index or 0, p[0]))
    return [d for _, d in indexed]


def is_volume_backed(devices: Sequence[BlockDevice]) -> bool:
    return any(d.boot_index == 0 for d in devices)


class BootVolumeOps:
    """Mixed into ``ComputeService``, which provides the attributes below."""

    _db: sessionmaker[Session]
    _config: Config
    images: Any
    notify: Callable[[str], None]
    # The volume service (set by the composition root; None: this cloud keeps no volumes).
    volumes: Any = None

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def _begin(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> tuple[t.Instance, Operation]:
        raise NotImplementedError

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        raise NotImplementedError

    def _base_min_ram(self, ctx: AuthContext, image_id: str | None) -> int:
        raise NotImplementedError

    def _check_block_devices(self, ctx: AuthContext, devices: Sequence[BlockDevice], count: int) -> None:
        """Refuse (400, with the reason) a mapping that cannot be made, before anything is created."""
        if not devices:
            return
        if self.volumes is None:
            raise BadRequest("Block device mappings to volumes need the block storage service, which this "
                             "cloud does not run.")
        with self._db() as s:
            for dev in devices:
                if dev.source == "volume":
                    self._check_volume(s, ctx, dev, count)
                elif dev.source == "snapshot":
                    snap = s.get(vt.Snapshot, dev.uuid)
                    if snap is None or (snap.project_id != ctx.project_id and not ctx.is_admin):
                        raise BadRequest("Block Device Mapping is Invalid: failed to get snapshot {id}.", id=dev.uuid)
                    if snap.status != vs.AVAILABLE:
                        raise BadRequest("Block Device Mapping is Invalid: snapshot {id} is {status}, not available.",
                                         id=snap.id, status=snap.status)
                    if dev.size_gib is not None and dev.size_gib < snap.size:
                        raise BadRequest("Block Device Mapping is Invalid: volume_size {size} GB is smaller than "
                                         "snapshot {id} ({need} GB).", size=dev.size_gib, id=snap.id, need=snap.size)
                elif dev.source == "image":
                    try:
                        image, _path = self.images.get_for_boot(ctx, dev.uuid)
                    except NotFound as exc:
                        raise BadRequest("Block Device Mapping is Invalid: failed to get image {id}.",
                                         id=dev.uuid) from exc
                    need = max(-(-(image.virtual_size or image.size or 0) // GIB), image.min_disk or 0)
                    if dev.size_gib is not None and dev.size_gib < need:
                        raise BadRequest("Block Device Mapping is Invalid: volume_size {size} GB is smaller than "
                                         "image {id} needs ({need} GB).", size=dev.size_gib, id=image.id, need=need)

    @staticmethod
    def _check_volume(s: Session, ctx: AuthContext, dev: BlockDevice, count: int) -> None:
        vol = s.get(vt.Volume, dev.uuid)
        if vol is None or (vol.project_id != ctx.project_id and not ctx.is_admin):
            raise BadRequest("Block Device Mapping is Invalid: failed to get volume {id}.", id=dev.uuid)
        if vol.status != vs.AVAILABLE:
            raise BadRequest("Invalid volume: volume {id} status must be available to attach, but it is "
                             "{status}.", id=vol.id, status=vol.status)
        if dev.boot_index == 0 and not vol.bootable:
            raise BadRequest("Block Device {id} is not bootable.", id=vol.id)
        if count > 1:
            raise BadRequest("Block Device Mapping is Invalid: volume {id} can be attached to one server, and "
                             "this request may create {count}.", id=vol.id, count=count)

    def _map_block_devices(self, ctx: AuthContext, row: t.Instance, devices: Sequence[BlockDevice],
                           request_id: str) -> str | None:
        """Hold or create each volume of the mapping for ``row``; the reason it failed, if it did.

        Volumes it already holds stay held when a later one fails: the server goes to ERROR and its
        delete frees them (and deletes those marked ``delete_on_termination``).
        """
        from yunstack.volume.service import ForServer, VolumeCreate  # the volume service imports compute's models

        first = int(bool(row.image_id)) + int(bool(row.config_drive))  # the root disk, the config drive
        for index, dev in enumerate(guest_order(devices)):
            device = "/dev/" + disk_device_name(first + index)
            try:
                if dev.source == "volume":
                    self._take_volume(row, dev, device)
                    continue
                self.volumes.create(ctx, VolumeCreate(
                    size=dev.size_gib, volume_type=dev.volume_type,
                    image_id=dev.uuid if dev.source == "image" else None,
                    snapshot_id=dev.uuid if dev.source == "snapshot" else None),
                    request_id, for_server=ForServer(instance_id=row.id, host=row.host or "", device=device,
                                                     boot_index=dev.boot_index,
                                                     delete_on_termination=dev.delete_on_termination))
            except YunError as exc:
                return f"volume {index + 1} of the block device mapping: {exc.text}"
        return None

    def _take_volume(self, row: t.Instance, dev: BlockDevice, device: str) -> None:
        now = datetime.now(UTC)
        with self._db.begin() as s:
            taken = s.execute(update(vt.Volume).where(vt.Volume.id == dev.uuid, vt.Volume.status == vs.AVAILABLE)
                              .values(status=vs.ATTACHING, status_reason=None, updated_at=now)
                              .execution_options(synchronize_session=False))
            if getattr(taken, "rowcount", 1) != 1:
                raise BadRequest("Invalid volume: volume {id} is no longer available.", id=dev.uuid)
            vol = s.get(vt.Volume, dev.uuid)
            s.add(vt.VolumeAttachment(id=new_uuid(), volume_id=str(dev.uuid), instance_id=row.id,
                                      project_id=row.project_id, host=row.host or "", device=device,
                                      status=attachments.ATTACHING,
                                      mode="ro" if vol is not None and vol.read_only else "rw",
                                      delete_on_termination=dev.delete_on_termination, boot_index=dev.boot_index,
                                      created_at=now, updated_at=now))

    def _start_or_wait(self, s: Session, row: t.Instance, request_id: str, failed: str | None) -> bool:
        """After the mapping: spawn now, wait (``block_device_mapping``) for volumes still being made or
        exported, or ERROR with the reason.  Conditional on the build still being ours (the sweep may
        have ended it); False if it was not."""
        done, wake = self._advance(s, row, request_id, failed, task=states.SPAWNING)
        if wake is not None and wake != row.host:
            self.notify(wake)  # the storage host, for the exports (the caller wakes the server's host)
        return done

    def boot_volume_done(self, instance_id: str, volume_id: str, error: str | None) -> None:
        """The volume service made (or failed to make), or exported, a volume this server's mapping waits for."""
        with self._db.begin() as s:
            row = s.get(t.Instance, instance_id)
            if row is None or row.vm_state != states.BUILDING or row.task_state != states.BLOCK_DEVICE_MAPPING:
                return  # its create decides (it has not finished mapping), or it was deleted meanwhile
            _done, wake = self._advance(s, row, _create_request(s, row.id), None, task=states.BLOCK_DEVICE_MAPPING)
        if wake:
            self.notify(wake)

    def _advance(self, s: Session, row: t.Instance, request_id: str, failed: str | None, *,
                 task: str) -> tuple[bool, str | None]:
        """The build's next move, conditional on its task state still being ``task``: ERROR with the
        reason; wait for volumes still being made; have the storage host export those it keeps for a
        server on another host; or queue the spawn.  Returns (whether the build was still ours, the
        host to wake)."""
        now = datetime.now(UTC)
        ours = (t.Instance.id == row.id, t.Instance.vm_state == states.BUILDING, t.Instance.task_state == task)
        held = list(s.scalars(select(vt.VolumeAttachment).where(vt.VolumeAttachment.instance_id == row.id)))
        failed = failed or _failure(s, held)
        if failed is not None:
            done = s.execute(update(t.Instance).where(*ours).values(
                vm_state=states.ERROR, task_state=None, fault=_fault(row.id, failed, now), updated_at=now)
                .execution_options(synchronize_session=False))
            return getattr(done, "rowcount", 1) == 1, None
        remote = [(a, vol) for a in held if a.connection is None and (vol := s.get(vt.Volume, a.volume_id))
                  is not None and not reached_directly(vol.backend, vol.host, row.host)]
        if any(a.status == attachments.RESERVED for a in held) or remote:
            done = s.execute(update(t.Instance).where(*ours).values(
                task_state=states.BLOCK_DEVICE_MAPPING, updated_at=now).execution_options(synchronize_session=False))
            if getattr(done, "rowcount", 1) != 1:
                return False, None
            if any(a.status == attachments.RESERVED for a in held):
                return True, None
            # All made: the storage host serves each to the server's host (an export is idempotent:
            # one queued twice by two reports at once ends the same).
            for _att, vol in remote:
                if not volume_operations.busy(s, vol.id):
                    volume_operations.export(s, vol, row.host or "", request_id)
            return True, remote[0][1].host
        queued = operations.queue_step(s, row, SpawnArgs(), request_id, task=states.SPAWNING, first=True,
                                       when=ours[1:])
        return queued, row.host

    def boot_export_failed(self, s: Session, row: t.Instance, volume_id: str, why: str) -> None:
        """The storage host could not export a volume this server boots with: the build fails, saying why."""
        now = datetime.now(UTC)
        row.vm_state, row.task_state, row.updated_at = states.ERROR, None, now
        row.fault = _fault(row.id, f"volume {volume_id} could not be exported to {row.host}: {why}", now)


    # -- images of volume-backed servers --------------------------------------------------------

    def _volume_backed(self, ctx: AuthContext, server_id: str) -> bool:
        with self._db() as s:
            return not self._row(s, ctx, server_id).image_id

    def guests_stopped(self, instance_ids: Sequence[str]) -> bool:
        """Whether none of these servers has a guest that could have a volume open (all stopped, idle)."""
        with self._db() as s:
            rows = [s.get(t.Instance, i) for i in instance_ids]
            return all(r is None or r.vm_state == states.DELETED
                       or (r.vm_state == states.STOPPED and r.task_state is None) for r in rows)

    @staticmethod
    def _snapshot_in_progress(s: Session, instance_id: str) -> str | None:
        """A volume of the server with a snapshot being taken (its guest must not open it meanwhile)."""
        found = s.scalar(select(vt.Snapshot.volume_id).join(
            vt.VolumeAttachment, vt.VolumeAttachment.volume_id == vt.Snapshot.volume_id).where(
            vt.VolumeAttachment.instance_id == instance_id, vt.Snapshot.status == vs.CREATING).limit(1))
        return str(found) if found is not None else None

    def snapshot_volume_backed(self, ctx: AuthContext, server_id: str, body: Any, request_id: str) -> dict[str, str]:
        """Nova's createImage of a volume-backed server: a snapshot of each of its volumes, and an image of
        no data that records them (``block_device_mapping``); booting that image makes the volumes
        again from the snapshots.  The guest must be stopped: the storage host snapshots a volume no
        QEMU has open (a running guest's needs QEMU's help, which is not built yet)."""
        with self._db() as s:
            row, _decl = self._begin(s, ctx, server_id, "createImage")
            backends = {v.backend for a in attachments.at_boot(s, row.id, building=False)
                        if (v := s.get(vt.Volume, a.volume_id)) is not None}
            if row.vm_state != states.STOPPED and not backends <= LIVE_SNAPSHOTS:
                raise Conflict("Instance {id} boots from a volume: stop it before createImage (a snapshot of "
                               "volumes that a running guest has open is not supported yet).", id=server_id)
            held = [(a.volume_id, a.boot_index, a.device, a.delete_on_termination)
                    for a in attachments.at_boot(s, row.id, building=False)]
            project, flavor = row.project_id, dict(row.flavor)
        snaps: list[Any] = []
        try:
            for volume_id, *_ in held:
                snaps.append(self.volumes.create_snapshot(ctx, volume_id, name=f"snapshot for {body.name}",
                                                          force=True, request_id=request_id))
        except YunError:
            for snap in snaps:  # none half-made: the ones taken go again
                with contextlib.suppress(YunError):
                    self.volumes.delete_snapshot(ctx, snap.id)
            raise
        mapping = [{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": snap.id,
                    "volume_size": snap.size, "boot_index": boot_index, "device_name": device,
                    "delete_on_termination": delete, "disk_bus": "virtio", "device_type": "disk"}
                   for snap, (_vid, boot_index, device, delete) in zip(snaps, held, strict=True)]
        props = {"instance_uuid": server_id, "image_type": "snapshot", "owner_user_name": ctx.user.name,
                 "user_id": ctx.user.id, "bdm_v2": "True", "root_device_name": "/dev/vda",
                 "block_device_mapping": json.dumps(mapping), **body.metadata}
        image = self.images.create(ctx, name=body.name, disk_format="raw", container_format="bare",
                                   visibility="private", min_disk=int(flavor.get("disk", 0)), properties=props)
        self.images.upload(ctx, image.id, [b""])  # active with no data, as Nova leaves such an image
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            self._record(s, row, "createImage", request_id, ctx)
        log.info("server %s (project %s): image %s records snapshots %s", server_id, project, image.id,
                 [x.id for x in snaps])
        return {"image_id": image.id}

    def _image_mapping(self, ctx: AuthContext, image_id: str) -> tuple[BlockDevice, ...]:
        """The volumes an image of a volume-backed server records (none for an ordinary image)."""
        image = self.images.get(ctx, image_id)  # NotFound for one the caller cannot see
        raw = (image.properties or {}).get("block_device_mapping")
        if not raw:
            return ()
        try:
            entries = json.loads(raw)
            devices = tuple(BlockDevice(source="snapshot", uuid=str(e["snapshot_id"]),
                                        boot_index=e.get("boot_index"), size_gib=e.get("volume_size"),
                                        delete_on_termination=bool(e.get("delete_on_termination")))
                            for e in entries if e.get("source_type") == "snapshot" and e.get("snapshot_id"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadRequest("Image {id} has a block_device_mapping property that is not a list of block device "
                             "mappings: {why}", id=image_id, why=str(exc)) from None
        if not is_volume_backed(devices):
            raise BadRequest("Image {id} records volumes but none to boot from (boot_index 0).", id=image_id)
        return devices


def _failure(s: Session, held: Sequence[vt.VolumeAttachment]) -> str | None:
    for att in held:
        if att.status == attachments.FAILED:
            vol = s.get(vt.Volume, att.volume_id)
            reason = (vol.status_reason if vol is not None else None) or "no reason given"
            return f"volume {att.volume_id} could not be created: {reason}"
    return None


def _fault(instance_id: str, why: str, now: datetime) -> dict[str, Any]:
    message = f"Build of instance {instance_id} aborted: {why}"
    return {"code": 500, "message": message[:255], "details": message, "created": now.isoformat()}


def _create_request(s: Session, instance_id: str) -> str:
    """The request id of the server's create (its instance action), for the spawn's task."""
    found = s.scalar(select(t.InstanceAction.request_id).where(t.InstanceAction.instance_id == instance_id,
                                                               t.InstanceAction.action == "create"))
    return str(found or "")
