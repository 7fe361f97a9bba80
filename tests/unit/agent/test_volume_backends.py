"""Which volume backend a host gets from its config, and what the attach step does with a volume
QEMU opens through its own protocol driver (rbd): a disk librbd opens, never an NBD export."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from yunstack import config
from yunstack.agent.host import make_volumes
from yunstack.agent.steps import volumes as steps
from yunstack.compute.driver import Disk, PowerState, RbdSource, check_volume
from yunstack.errors import BadRequest, DriverMisconfigured
from yunstack.protocol import AttachVolumeArgs, VolumeExportArgs, Work
from yunstack.volume.backend import LocalDisk, reached_directly
from yunstack.volume.backends.file import FileBackend
from yunstack.volume.backends.rbd import RbdBackend


def test_the_volume_backend_is_chosen_by_name(tmp_path: Path) -> None:
    env = {"YUN_SERVER_STATE_DIR": str(tmp_path)}
    assert isinstance(make_volumes(config.load(env=env)), FileBackend)
    rbd = make_volumes(config.load(env=env | {"YUN_VOLUME_BACKEND": "rbd", "YUN_VOLUME_RBD_POOL": "cinder",
                                               "YUN_VOLUME_RBD_USER": "yun", "YUN_VOLUME_RBD_CONF": "/c.conf"}))
    assert isinstance(rbd, RbdBackend) and rbd.name == "rbd"
    assert rbd._node("volume-1") == {"driver": "rbd", "pool": "cinder", "image": "volume-1", "conf": "/c.conf",
                                     "user": "yun"}
    with pytest.raises(BadRequest, match="'file', 'rbd' or 'fake'"):
        make_volumes(config.load(env=env | {"YUN_VOLUME_BACKEND": "lvm"}))


class _RbdLike:
    async def local_disk(self, volume_id: str) -> LocalDisk:
        return LocalDisk(path=None, format="raw", node={"driver": "rbd", "pool": "p", "image": f"volume-{volume_id}"})


async def test_an_rbd_volume_is_attached_through_librbd_and_never_exported_over_nbd() -> None:
    plugged: list[Disk] = []

    async def attach_volume(instance_id: str, disk: Disk) -> str:
        plugged.append(disk)
        return "vdb"

    async def get_info(instance_id: str) -> Any:
        return SimpleNamespace(power_state=PowerState.RUNNING)

    driver: Any = SimpleNamespace(attach_volume=attach_volume, get_info=get_info)
    host: Any = SimpleNamespace(volumes=_RbdLike(), driver=driver, exports=SimpleNamespace(), address="127.0.0.1")
    work = Work(instance_id="server-1", request_id="r", args=AttachVolumeArgs(volume_id="vol-1"))
    await steps.attach(host, work)
    (disk,) = plugged
    assert disk.rbd == RbdSource(pool="p", image="volume-vol-1") and disk.format == "raw" and disk.serial == "vol-1"
    assert disk.remote and check_volume(disk) == "vol-1"
    export = Work(instance_id="vol-1", request_id="r", args=VolumeExportArgs(client_host="h2"),
                  resource_type="volume")
    with pytest.raises(DriverMisconfigured, match="rbd driver, not a file of this host"):
        await steps.export(host, export)


def test_only_a_file_volume_of_another_host_needs_an_export() -> None:
    # rbd: every host reaches the Ceph cluster itself (the same [volume] settings everywhere).
    assert reached_directly("file", "storage", "storage") and reached_directly("rbd", "storage", "compute-2")
    assert not reached_directly("file", "storage", "compute-2")
