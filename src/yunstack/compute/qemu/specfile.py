"""A guest's on-disk records: ``spec.json`` (what to run), ``intent`` (what we last asked for) and
``ports.json`` (where the running QEMU's volumes sit).

``spec.json`` lets the driver restart or adopt a guest without the database, attached volumes
included (they are disks of the spec; a volume over NBD with its key, so the file is 0600);
``intent`` tells a guest that we stopped or saved apart from one that stopped by itself;
``ports.json`` lets a saved state be restored into the same devices.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from yunstack.compute.driver import (
    ConfigDrive,
    Disk,
    DiskKind,
    InstanceSpec,
    MemoryBacking,
    NbdSource,
    Nic,
    RbdSource,
)
from yunstack.compute.qemu.cmdline import IDENTITY_CHARDEV, InstancePaths, PortLayout
from yunstack.errors import DriverError


def read_intent(paths: InstancePaths) -> str:
    try:
        return paths.intent.read_text().strip()
    except FileNotFoundError:
        return "running"


def write_intent(paths: InstancePaths, intent: str) -> None:
    paths.intent.write_text(intent + "\n")


def save_spec(paths: InstancePaths, spec: InstanceSpec) -> None:
    drive = spec.config_drive
    data: dict[str, Any] = {
        "id": spec.id, "name": spec.name, "hostname": spec.hostname, "vcpus": spec.vcpus,
        "memory_mib": spec.memory_mib, "balloon": spec.balloon,
        "disks": [{"kind": d.kind.value, "source": str(d.source), "format": d.format, "size_gib": d.size_gib,
                   "device": d.device, "bus": d.bus, "boot_index": d.boot_index, "read_only": d.read_only,
                   "cache": d.cache, "serial": d.serial, "nbd": None if d.nbd is None else asdict(d.nbd),
                   "rbd": None if d.rbd is None else asdict(d.rbd)}
                  for d in spec.disks],
        "memory": {"page_sharing": spec.memory.page_sharing, "thp": spec.memory.thp,
                   "hugepages": spec.memory.hugepages, "template": spec.memory.template},
        "nics": [{"tap": n.tap, "mac": n.mac, "bridge": n.bridge} for n in spec.nics],
        "config_drive": None if drive is None else {
            "meta_data": dict(drive.meta_data),
            "user_data": None if drive.user_data is None else base64.b64encode(drive.user_data).decode(),
            "network_data": None if drive.network_data is None else dict(drive.network_data),
            "vendor_data": None if drive.vendor_data is None else dict(drive.vendor_data),
        },
    }
    _write_json(paths.spec, data)


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new one, never half of one)."""
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    tmp.replace(path)


def _disk(data: dict[str, Any]) -> Disk:
    nbd, rbd = data.get("nbd"), data.get("rbd")
    return Disk(**{**data, "kind": DiskKind(data.get("kind", DiskKind.LOCAL_OVERLAY)), "source": Path(data["source"]),
                   "nbd": None if nbd is None else NbdSource(**nbd), "rbd": None if rbd is None else RbdSource(**rbd)})


def save_layout(paths: InstancePaths, layout: PortLayout) -> None:
    _write_json(paths.ports, {"ports": layout.ports, "volumes": dict(layout.volumes), "nics": dict(layout.nics),
                              "config": layout.config, "identity": layout.identity})


def load_layout(paths: InstancePaths) -> PortLayout | None:
    """The recorded layout, or None when there is none (a guest started before volumes existed)."""
    try:
        data = json.loads(paths.ports.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DriverError(detail=f"reading {paths.ports}: {exc}") from exc
    identity = data.get("identity")
    if identity is None:  # recorded before the layout said: what its QEMU was started with says
        identity = _last_start_has(paths, f"id={IDENTITY_CHARDEV},")
    return PortLayout(int(data["ports"]), {str(k): str(v) for k, v in data["volumes"].items()},
                      {str(k): str(v) for k, v in data.get("nics", {}).items()}, data.get("config"),
                      identity=bool(identity))


def _last_start_has(paths: InstancePaths, text: str) -> bool:
    """Whether the last QEMU started for the instance had ``text`` on its command line
    (``process.launch`` logs each one's to qemu.log)."""
    try:
        with paths.qemu_log.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - (1 << 20)))
            lines = log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return False
    starts = [line for line in lines if line.startswith("--- ") and " starting: " in line]
    return bool(starts) and text in starts[-1]


def load_spec(paths: InstancePaths) -> InstanceSpec:
    try:
        data = json.loads(paths.spec.read_text())
    except (OSError, ValueError) as exc:
        raise DriverError(detail=f"reading {paths.spec}: {exc}") from exc
    drive = data.pop("config_drive")
    if "disks" not in data:  # written before the spec had a disk list: one root overlay, string flags
        extra = data.pop("extra", {})
        data["disks"] = [{"source": data.pop("base_image"), "format": data.pop("base_format", "qcow2"),
                          "size_gib": data.pop("disk_gib", 0)}]
        data["memory"] = {"page_sharing": extra.get("yunstack:page_sharing", "on") != "off",
                          "thp": extra.get("yunstack:thp", "on") != "off"}
    return InstanceSpec(
        **{k: v for k, v in data.items() if k not in ("nics", "disks", "memory")},
        disks=tuple(_disk(d) for d in data["disks"]),
        memory=MemoryBacking(**data["memory"]),
        nics=tuple(Nic(**n) for n in data["nics"]),
        config_drive=None if drive is None else ConfigDrive(
            meta_data=drive["meta_data"],
            user_data=None if drive["user_data"] is None else base64.b64decode(drive["user_data"]),
            network_data=drive["network_data"], vendor_data=drive["vendor_data"]),
    )
