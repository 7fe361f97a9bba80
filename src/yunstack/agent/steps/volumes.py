"""The storage host's half of the volume operations: its backend makes, grows, freezes and removes them.

Every step is safe to repeat (the backend's operations are idempotent: a create that finds its
volume adopts it, a delete of an absent volume is done), so a step run again after an agent or
control-plane restart ends as the first run would have.  A volume step has no guest: it reports
``NOSTATE`` as its power state, and the volume service decides the status from the error alone.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from yunstack.agent.steps.base import Host, Report, Step, observe
from yunstack.compute.driver import Disk, DiskKind, NbdSource, PowerState, RbdSource
from yunstack.errors import Conflict, DriverMisconfigured
from yunstack.protocol import (
    AttachedResult,
    AttachVolumeArgs,
    DetachVolumeArgs,
    ExtendVolumeArgs,
    NbdConnection,
    VolumeCreateArgs,
    VolumeDeleteArgs,
    VolumeExportArgs,
    VolumeExportedResult,
    VolumeExtendArgs,
    VolumeRevertArgs,
    VolumeSnapshotArgs,
    VolumeSnapshotDeleteArgs,
    VolumeUploadArgs,
    Work,
)
from yunstack.volume.backend import GIB, LocalDisk, VolumeBackend

DONE = Report(PowerState.NOSTATE)


def _backend(host: Host) -> VolumeBackend:
    if host.volumes is None:
        raise Conflict("This host keeps no volumes (its [volume] backend is off).")
    return host.volumes


async def create(host: Host, work: Work) -> Report:
    args = work.args
    assert isinstance(args, VolumeCreateArgs)
    backend = _backend(host)
    if args.image_id:
        path, fmt = await asyncio.to_thread(host.cache.ensure, args.image_id)
        await backend.create_from_image(work.instance_id, args.size_gib, path, fmt, args.image_id)
    elif args.snapshot_id:
        await backend.create_from_snapshot(work.instance_id, args.size_gib, args.snapshot_id)
    elif args.source_volid:
        await backend.clone(work.instance_id, args.size_gib, args.source_volid)
    else:
        await backend.create(work.instance_id, args.size_gib)
    return DONE


async def delete(host: Host, work: Work) -> Report:
    assert isinstance(work.args, VolumeDeleteArgs)
    await _backend(host).delete(work.instance_id)
    return DONE


async def extend(host: Host, work: Work) -> Report:
    assert isinstance(work.args, VolumeExtendArgs)
    await _backend(host).extend(work.instance_id, work.args.size_gib)
    return DONE


async def snapshot(host: Host, work: Work) -> Report:
    assert isinstance(work.args, VolumeSnapshotArgs)
    await _backend(host).snapshot(work.args.snapshot_id, work.instance_id)
    return DONE


async def delete_snapshot(host: Host, work: Work) -> Report:
    assert isinstance(work.args, VolumeSnapshotDeleteArgs)
    await _backend(host).delete_snapshot(work.args.snapshot_id)
    return DONE


async def revert(host: Host, work: Work) -> Report:
    assert isinstance(work.args, VolumeRevertArgs)
    await _backend(host).revert(work.instance_id, work.args.snapshot_id)
    return DONE


async def upload(host: Host, work: Work) -> Report:
    """Convert the volume to the image's format next to it, then send that file into the queued image."""
    args = work.args
    assert isinstance(args, VolumeUploadArgs)
    with tempfile.TemporaryDirectory(prefix="yun-upload-") as scratch:
        out = Path(scratch) / f"image.{args.disk_format}"
        await _backend(host).copy_to(work.instance_id, out, args.disk_format)
        await asyncio.to_thread(host.link.upload_snapshot, work.instance_id, args.image_id, out)
    return DONE


# -- a volume in a guest: steps on a server, run by its compute host --------------------------------

def volume_path(volume_id: str, local: LocalDisk) -> Path:
    """The file or device of a volume this host keeps (one reached through QEMU's own protocol driver,
    ``rbd``, has none: it is not exported over NBD either)."""
    if local.path is None:
        raise DriverMisconfigured(detail=f"volume {volume_id} is reached through QEMU's "
                                         f"{(local.node or {}).get('driver')} driver, not a file of this host")
    return local.path


def local_volume_disk(volume_id: str, local: LocalDisk, *, read_only: bool, boot_index: int | None = None) -> Disk:
    """The disk of a volume this host's backend keeps: its file or device, or its RBD image (librbd)."""
    node = local.node or {}
    if local.path is None and node.get("driver") == "rbd":
        rbd = RbdSource(pool=str(node["pool"]), image=str(node["image"]), namespace=str(node.get("namespace", "")),
                        conf=str(node.get("conf", "")), user=str(node.get("user", "")))
        return Disk(kind=DiskKind.VOLUME, source=Path(f"/rbd/{rbd.pool}/{rbd.image}"), format="raw", serial=volume_id,
                    boot_index=boot_index, read_only=read_only, rbd=rbd)
    return Disk(kind=DiskKind.VOLUME, source=volume_path(volume_id, local), format=local.format, serial=volume_id,
                boot_index=boot_index, read_only=read_only)


def nbd_disk(volume_id: str, nbd: NbdConnection, *, read_only: bool, boot_index: int | None = None) -> Disk:
    """A volume kept on another host, reached at its export (the storage host serves its data raw)."""
    return Disk(kind=DiskKind.VOLUME, source=Path(f"/nbd/{nbd.host}/{nbd.port}/{nbd.export}"), format="raw",
                serial=volume_id, boot_index=boot_index, read_only=read_only,
                nbd=NbdSource(host=nbd.host, port=nbd.port, export=nbd.export, psk_identity=nbd.psk_identity,
                              psk_key=nbd.psk_key))


async def attach(host: Host, work: Work) -> Report:
    """Hot-plug the volume: over NBD from the storage host's export when it is kept on another host, else
    this host's own file or device (the local data path)."""
    args = work.args
    assert isinstance(args, AttachVolumeArgs)
    if args.nbd is not None:
        disk = nbd_disk(args.volume_id, args.nbd, read_only=args.read_only)
    else:
        local = await _backend(host).local_disk(args.volume_id)  # NotFound: not kept on this host
        disk = local_volume_disk(args.volume_id, local, read_only=args.read_only)
    device = await host.driver.attach_volume(work.instance_id, disk)
    observed = await observe(host, work.instance_id)
    return Report(observed.power, AttachedResult(device=device))


async def extend_attached(host: Host, work: Work) -> Report:
    """A running (or paused) QEMU grows the volume and tells the guest (QMP ``block_resize``: the file
    is open, so only QEMU may grow it); a stopped guest's volume is grown by this host's backend."""
    args = work.args
    assert isinstance(args, ExtendVolumeArgs)
    info = await host.driver.get_info(work.instance_id)
    if info.power_state in (PowerState.RUNNING, PowerState.PAUSED):
        await host.driver.extend_volume(work.instance_id, args.volume_id, args.size_gib * GIB)
    else:
        await _backend(host).extend(args.volume_id, args.size_gib)
    return await observe(host, work.instance_id)


async def export(host: Host, work: Work) -> Report:
    """Serve the volume over NBD to the host that attaches it, with a key of its own (TLS-PSK)."""
    args = work.args
    assert isinstance(args, VolumeExportArgs)
    if host.exports is None:
        raise Conflict("This host keeps no volumes, so it exports none.")
    local = await _backend(host).local_disk(work.instance_id)
    volume_path(work.instance_id, local)  # an rbd volume is not exported yet either
    done = await host.exports.start(work.instance_id, local, host.address, identity=_identity(args.client_host))
    return Report(PowerState.NOSTATE, VolumeExportedResult(connection=NbdConnection(
        host=done.host, port=done.port, export=done.name, psk_identity=done.psk_identity, psk_key=done.psk_key)))


async def unexport(host: Host, work: Work) -> Report:
    if host.exports is not None:
        await host.exports.stop(work.instance_id)
    return DONE


def _identity(client_host: str) -> str:
    """The TLS-PSK identity: the attaching host's name, in the alphabet a key file allows."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", client_host).lstrip("-._")[:64] or "yunstack"


async def detach(host: Host, work: Work) -> Report:
    assert isinstance(work.args, DetachVolumeArgs)
    await host.driver.detach_volume(work.instance_id, work.args.volume_id)
    return await observe(host, work.instance_id)


STEPS = (Step("attach_volume", attach), Step("detach_volume", detach), Step("extend_volume", extend_attached),
         Step("volume_create", create), Step("volume_delete", delete), Step("volume_extend", extend),
         Step("volume_snapshot", snapshot), Step("volume_snapshot_delete", delete_snapshot),
         Step("volume_revert", revert),
         Step("volume_upload", upload), Step("volume_export", export), Step("volume_unexport", unexport))
