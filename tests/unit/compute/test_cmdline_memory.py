"""The per-VM memory flags in InstanceSpec.extra become QEMU argv (page sharing) or a launch option (THP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from yunstack.compute.driver import InstanceSpec
from yunstack.compute.qemu.cmdline import InstancePaths, build_argv, thp_disabled
from yunstack.config import QemuConfig

PATHS = InstancePaths(Path("/var/lib/yunstack/instances/abc"))


def _spec(**extra: str) -> InstanceSpec:
    return InstanceSpec(id="abc", name="vm", hostname="vm1", vcpus=1, memory_mib=256, disk_gib=1,
                        base_image=Path("/cache/base.qcow2"), extra=extra)


@pytest.mark.parametrize(
    ("extra", "machine", "no_thp"),
    [
        pytest.param({}, "q35", False, id="default-unchanged"),
        pytest.param({"yunstack:page_sharing": "on", "yunstack:thp": "off"}, "q35", True, id="share-no-thp"),
        pytest.param({"yunstack:page_sharing": "off"}, "q35,mem-merge=off", False, id="opt-out-mem-merge-off"),
        pytest.param({"yunstack:page_sharing": "off", "yunstack:thp": "on"}, "q35,mem-merge=off", False,
                     id="opt-out-with-thp"),
    ],
)
def test_memory_flags(extra: dict[str, str], machine: str, no_thp: bool) -> None:
    argv = build_argv(_spec(**extra), PATHS, QemuConfig(), "tcg")
    assert argv[argv.index("-machine") + 1] == machine
    assert thp_disabled(_spec(**extra)) is no_thp
