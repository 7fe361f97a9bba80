"""NICs plugged into and out of a running QEMU over QMP.

Plug: ``netdev_add`` (a tap the dataplane made, ``script=no``) then ``device_add virtio-net-pci``;
on q35 the device goes behind one of the empty PCIe root ports that ``cmdline`` reserves, because
q35's root bus cannot hot-plug.  Unplug: ``device_del``, wait until the guest has let go of the
device (ACPI eject; QEMU then removes it), then ``netdev_del``.  Devices are found by MAC, so NICs
from the command line (``nic0``...) and hot-plugged ones (``hnic<mac>``) are handled alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from yunstack.compute.driver import Nic
from yunstack.compute.qemu.cmdline import HOTPLUG_PORTS, HOTPLUG_PREFIX
from yunstack.compute.qemu.qmp import QmpSession
from yunstack.errors import Conflict, DriverError, DriverUnavailable

UNPLUG_TIMEOUT = 20.0


async def plug(qmp: QmpSession, nic: Nic, machine: str, port: str | None = None) -> str | None:
    """Add ``nic`` to the running guest, behind ``port`` or else a free root port (q35), and return
    the port (None on the root bus); a no-op when a NIC with its MAC is already there."""
    if nic.mac in (await nics(qmp)).values():
        return None
    key = nic.mac.replace(":", "")
    netdev, device = f"hnet{key}", f"hnic{key}"
    await qmp.execute(
        "netdev_add", {"type": "tap", "id": netdev, "ifname": nic.tap, "script": "no", "downscript": "no"}
    )
    args: dict[str, object] = {
        "driver": "virtio-net-pci",
        "netdev": netdev,
        "id": device,
        "mac": nic.mac,
        "romfile": "",
    }
    if machine.split(",")[0].startswith(("q35", "pc-q35")):
        port = port or free_port(await qmp.execute("query-pci"))
        if port is None:
            await qmp.execute("netdev_del", {"id": netdev})
            raise Conflict(
                detail=f"no free hot-plug slot: at most {HOTPLUG_PORTS} interfaces can be attached to a running server"
            )
        args["bus"] = port
    try:
        await qmp.execute("device_add", args)
    except DriverError:
        with contextlib.suppress(DriverError):
            await qmp.execute("netdev_del", {"id": netdev})
        raise
    return port


async def plug_config_drive(qmp: QmpSession, iso: Path, port: str) -> None:
    """Add the config drive ``iso`` (read-only) behind root port ``port``, as a guest started from a
    memory template gets its own: the ids and the port a cold boot gives it (``config0``)."""
    await qmp.execute("blockdev-add", {"driver": "raw", "node-name": "config0", "read-only": True,
                                       "file": {"driver": "file", "filename": str(iso), "read-only": True}})
    try:
        await qmp.execute("device_add", {"driver": "virtio-blk-pci", "drive": "config0", "id": "virtio-config0",
                                         "bus": port})
    except DriverError:
        with contextlib.suppress(DriverError):
            await qmp.execute("blockdev-del", {"node-name": "config0"})
        raise


async def unplug(qmp: QmpSession, mac: str, label: str, timeout: float = UNPLUG_TIMEOUT) -> None:
    """Remove the NIC with ``mac`` from the running guest; a no-op when it has none."""
    device = next((d for d, m in (await nics(qmp)).items() if m == mac), None)
    if device is None:
        return
    netdev = await qmp.execute("qom-get", {"path": f"/machine/peripheral/{device}", "property": "netdev"})
    await qmp.execute("device_del", {"id": device})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while device in await peripherals(qmp):
        if loop.time() > deadline:
            raise DriverUnavailable(detail=f"{label} did not release NIC {mac} within {timeout:.0f}s")
        await asyncio.sleep(0.2)
    if netdev:
        with contextlib.suppress(DriverError):  # already gone if QEMU removed it with the device
            await qmp.execute("netdev_del", {"id": str(netdev)})


async def peripherals(qmp: QmpSession) -> set[str]:
    """Ids of every device with an id (``/machine/peripheral``)."""
    return {str(item["name"]) for item in await qmp.execute("qom-list", {"path": "/machine/peripheral"})}


async def nics(qmp: QmpSession) -> dict[str, str]:
    """Device id -> MAC (lower case) of every virtio-net device of the guest."""
    out = {}
    for item in await qmp.execute("qom-list", {"path": "/machine/peripheral"}):
        if str(item.get("type", "")) == "child<virtio-net-pci>":
            name = str(item["name"])
            mac = await qmp.execute("qom-get", {"path": f"/machine/peripheral/{name}", "property": "mac"})
            out[name] = str(mac).lower()
    return out


def free_port(buses: list[dict[str, Any]]) -> str | None:
    """The first reserved root port with nothing behind it, from ``query-pci``'s answer."""
    for bus in buses:
        for dev in bus.get("devices", []):
            qdev = str(dev.get("qdev_id", ""))
            if qdev.startswith(HOTPLUG_PREFIX) and not dev.get("pci_bridge", {}).get("devices"):
                return qdev
    return None
