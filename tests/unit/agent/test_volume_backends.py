"""Which volume backend a host gets from its config, and what the attach step does with a volume
QEMU opens through its own protocol driver (rbd): it refuses, naming why, until the compute side can."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from yunstack import config
from yunstack.agent.host import make_volumes
from yunstack.agent.steps import volumes as steps
from yunstack.errors import BadRequest, DriverMisconfigured
from yunstack.protocol import AttachVolumeArgs, Work
from yunstack.volume.backend import LocalDisk
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


async def test_attaching_a_volume_without_a_path_is_refused_with_the_reason() -> None:
    driver: Any = SimpleNamespace()  # never reached
    host: Any = SimpleNamespace(volumes=_RbdLike(), driver=driver)
    work = Work(instance_id="server-1", request_id="r", args=AttachVolumeArgs(volume_id="vol-1"))
    with pytest.raises(DriverMisconfigured, match="rbd driver; attaching it is not built yet"):
        await steps.attach(host, work)
