"""Volumes plugged into and out of a running QEMU over QMP.

Plug: ``blockdev-add`` the file (or block device) node and the format node on it, then
``device_add virtio-blk-pci`` with the volume's serial; on q35 behind a free root port of the ones
``cmdline`` reserves (``hotplug*``, shared with NICs), because q35's root bus cannot hot-plug.
Unplug: ``device_del``, then wait for ``DEVICE_DELETED``, which QEMU sends once the guest has
acknowledged the eject (ACPI PCI hot-plug on our q35) *and* the device let go of its block node,
then ``blockdev-del`` both nodes.  Waiting for the device to leave ``/machine/peripheral``, as
``hotplug.unplug`` does for NICs, is not enough here: QEMU unlists the device before it drops its
node, and ``blockdev-del`` in between fails with "Node ... is in use" (measured).

A volume over NBD (``Disk.nbd``: kept on another host) is an ``nbd`` node with a ``raw`` node on
it.  Its TLS-PSK client credentials are plugged first (``object-add``: QEMU reads the key file
then, once) and unplugged last (``object-del``).  The key file lives in the instance directory
(``InstancePaths.nbd_keys``, ``write_key``) until the volume is detached.

Names come from ``cmdline.VolumeIds``, so a volume that came with the command line (a restart) is
found and unplugged exactly like a hot-plugged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from yunstack.compute.driver import Disk, DiskKind, InstanceSpec, NbdSource, VolumeDetachTimeout, named_at_boot
from yunstack.compute.qemu.cmdline import HOTPLUG_PORTS, VolumeIds, is_q35, tls_object, volume_device, volume_nodes
from yunstack.compute.qemu.hotplug import free_port, peripherals
from yunstack.compute.qemu.qmp import QmpSession
from yunstack.errors import Conflict, DriverError

# The guest's ACPI handler ejects a virtio-blk disk in about 0.15 s under TCG (measured on the
# tiny image); a busy or slow guest gets far more before we call it stuck.
UNPLUG_TIMEOUT = 120.0  # Nova's libvirt driver: 8 attempts of 20 s; a guest busy booting under TCG needs it
UNPLUG_RETRY_SECONDS = 10.0  # a PCIe slot takes a repeated button press only after 5 s of blinking
# QEMU unlists a device a moment before it lets go of its block node (see the module docstring).
NODE_RELEASE_TIMEOUT = 2.0


# ---------------------------------------------------------------- the spec's volumes
# A guest's attached volumes are the VOLUME disks of its recorded spec, after its own disks.


def attached(spec: InstanceSpec) -> tuple[Disk, ...]:
    """The spec's volumes, in order."""
    return tuple(d for d in spec.disks if d.kind == DiskKind.VOLUME)


def find(spec: InstanceSpec, serial: str) -> Disk | None:
    return next((d for d in attached(spec) if d.serial == serial), None)


def keep_attached(spec: InstanceSpec, recorded: InstanceSpec) -> InstanceSpec:
    """``spec`` (from a caller who may not know the volumes) with ``recorded``'s volumes it does not list."""
    listed = {d.serial for d in attached(spec)}
    kept = tuple(d for d in attached(recorded) if d.serial is not None and d.serial not in listed)
    return replace(spec, disks=(*spec.disks, *kept)) if kept else spec


def without(spec: InstanceSpec, serial: str) -> InstanceSpec:
    return replace(spec, disks=tuple(d for d in spec.disks if d.kind != DiskKind.VOLUME or d.serial != serial))


def named(spec: InstanceSpec, rescued: bool) -> InstanceSpec:
    """``spec`` with its volumes' device names as a fresh boot gives them (a detach may have left a gap)."""
    names = iter(named_at_boot(spec, attached(spec), rescued=rescued))
    return replace(spec, disks=tuple(next(names) if d.kind == DiskKind.VOLUME else d for d in spec.disks))


# ---------------------------------------------------------------- QMP


async def plug(qmp: QmpSession, disk: Disk, cache: str, host_device: bool, machine: str,
               key_dir: Path | None = None) -> str | None:
    """Add the volume to the running guest; returns the root port it sits behind (None off q35).

    A volume over NBD needs ``key_dir`` holding its key (``write_key``).  A device with the
    volume's id already there is left as it is.  Nodes and credentials left by an earlier plug that
    was cut short are replaced.  On failure nothing of it stays in QEMU.
    """
    ids = VolumeIds.of(disk)
    q35 = is_q35(machine)
    if ids.device in await peripherals(qmp):
        return port_of(await qmp.execute("query-pci"), ids.device) if q35 else None
    await _drop_nodes(qmp, ids)
    await _drop_tls(qmp, ids)
    args: dict[str, Any] = volume_device(disk, cache)
    port = None
    if q35:
        port = free_port(await qmp.execute("query-pci"))
        if port is None:
            raise Conflict(detail=f"no free hot-plug slot for volume {disk.serial}: a running server has "
                                  f"{HOTPLUG_PORTS} for interfaces and volumes together (a restart frees them)")
        args["bus"] = port
    try:
        if disk.nbd is not None:
            if key_dir is None:
                raise DriverError(detail=f"volume {disk.serial} over NBD: no key directory given")
            await qmp.execute("object-add", tls_object(disk, key_dir))
        for node in volume_nodes(disk, cache, host_device):
            await qmp.execute("blockdev-add", node)
        await qmp.execute("device_add", args)
    except BaseException:
        with contextlib.suppress(DriverError):
            await _drop_nodes(qmp, ids)
        with contextlib.suppress(DriverError):
            await _drop_tls(qmp, ids)
        raise
    return port


async def unplug(qmp: QmpSession, serial: str, instance_id: str, timeout: float | None = None) -> None:
    """Remove the volume from the running guest; its nodes go once the guest let go of the device.

    Raises ``VolumeDetachTimeout`` if the guest has not acknowledged within ``timeout`` seconds
    (``UNPLUG_TIMEOUT``); the device and its nodes then stay (the request stays pending in QEMU).
    """
    ids = VolumeIds.for_serial(serial)
    timeout = UNPLUG_TIMEOUT if timeout is None else timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with qmp.events("DEVICE_DELETED") as deleted:
        # Listening before looking: a device that is there now cannot leave unseen.
        if ids.device in await peripherals(qmp):
            while True:
                # Asked again every UNPLUG_RETRY_SECONDS, as Nova's libvirt driver does: a guest that
                # was still booting (or busy) when the first request came may never have seen it,
                # and QEMU presses the slot's button (or raises the ACPI event) again on a repeat.
                try:
                    await qmp.execute("device_del", {"id": ids.device})
                except DriverError as exc:
                    if "already in the process of unplug" not in exc.text:  # an earlier detach asked already
                        raise
                left = deadline - loop.time()
                if await deleted.wait(lambda data: data.get("device") == ids.device,
                                      max(0.0, min(UNPLUG_RETRY_SECONDS, left))):
                    break
                if loop.time() >= deadline:
                    raise VolumeDetachTimeout(instance_id=instance_id, serial=serial, seconds=timeout)
    await _drop_nodes(qmp, ids)
    await _drop_tls(qmp, ids)


async def resize(qmp: QmpSession, serial: str, size_bytes: int, label: str) -> None:
    """Give the volume's node ``size_bytes`` (grow only); a volume the guest does not have is a no-op."""
    ids = VolumeIds.for_serial(serial)
    node = next((n for n in await qmp.execute("query-named-block-nodes", {"flat": True})
                 if n.get("node-name") == ids.node), None)
    if node is None:
        return
    current = int(node["image"]["virtual-size"])
    if size_bytes < current:
        raise DriverError(detail=f"volume {serial} of {label}: cannot shrink it from {current} to {size_bytes} bytes")
    if size_bytes > current:
        await qmp.execute("block_resize", {"node-name": ids.node, "size": int(size_bytes)})


def port_of(buses: list[dict[str, Any]], device: str) -> str | None:
    """The root port that ``device`` sits behind, from ``query-pci``'s answer."""
    for bus in buses:
        for dev in bus.get("devices", []):
            behind = dev.get("pci_bridge", {}).get("devices", [])
            if any(d.get("qdev_id") == device for d in behind):
                return str(dev.get("qdev_id"))
    return None


async def _drop_nodes(qmp: QmpSession, ids: VolumeIds) -> None:
    """``blockdev-del`` the volume's nodes that exist, the format node first (it holds the file node)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NODE_RELEASE_TIMEOUT
    for name in (ids.node, ids.file):
        while name in await _node_names(qmp):
            try:
                await qmp.execute("blockdev-del", {"node-name": name})
            except DriverError as exc:
                if "is in use" not in exc.text or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def _node_names(qmp: QmpSession) -> set[str]:
    return {str(n.get("node-name")) for n in await qmp.execute("query-named-block-nodes", {"flat": True})}


async def _drop_tls(qmp: QmpSession, ids: VolumeIds) -> None:
    """``object-del`` the volume's TLS credentials if QEMU has them (a node using them keeps a reference)."""
    if ids.tls in {str(o.get("name")) for o in await qmp.execute("qom-list", {"path": "/objects"})}:
        await qmp.execute("object-del", {"id": ids.tls})


# ---------------------------------------------------------------- key files of volumes over NBD


def write_key(key_dir: Path, nbd: NbdSource) -> None:
    """Write ``key_dir/keys.psk`` (``identity:key``, 0600 in a 0700 directory): what ``tls-creds-psk`` reads."""
    try:
        key_dir.parent.mkdir(mode=0o700, exist_ok=True)
        key_dir.mkdir(mode=0o700, exist_ok=True)
        tmp = key_dir / ".keys.psk.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{nbd.psk_identity}:{nbd.psk_key}\n")
        tmp.replace(key_dir / "keys.psk")
    except OSError as exc:
        raise DriverError(detail=f"writing the NBD key in {key_dir}: {exc}") from exc


def remove_key(key_dir: Path) -> None:
    """Remove a volume's key directory (absent: nothing to do)."""
    try:
        shutil.rmtree(key_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DriverError(detail=f"removing the NBD key in {key_dir}: {exc}") from exc
