"""A spec's typed memory backing becomes QEMU argv (page sharing) or a launch option (THP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from yunstack.compute.driver import InstanceSpec, MemoryBacking, root_disk
from yunstack.compute.qemu.cmdline import InstancePaths, build_argv, thp_disabled
from yunstack.config import QemuConfig

PATHS = InstancePaths(Path("/var/lib/yunstack/instances/abc"))


def _spec(memory: MemoryBacking) -> InstanceSpec:
    return InstanceSpec(id="abc", name="vm", hostname="vm1", vcpus=1, memory_mib=256,
                        disks=root_disk(Path("/cache/base.qcow2"), size_gib=1), memory=memory)


@pytest.mark.parametrize(
    ("memory", "machine", "no_thp"),
    [
        pytest.param(MemoryBacking(), "q35", False, id="default-unchanged"),
        pytest.param(MemoryBacking(page_sharing=True, thp=False), "q35", True, id="share-no-thp"),
        pytest.param(MemoryBacking(page_sharing=False), "q35,mem-merge=off", False, id="opt-out-mem-merge-off"),
        pytest.param(MemoryBacking(page_sharing=False, thp=True), "q35,mem-merge=off", False,
                     id="opt-out-with-thp"),
    ],
)
def test_memory_backing_becomes_machine_options_and_a_launch_flag(
        memory: MemoryBacking, machine: str, no_thp: bool) -> None:
    argv = build_argv(_spec(memory), PATHS, QemuConfig(), "tcg")
    assert argv[argv.index("-machine") + 1] == machine
    assert thp_disabled(_spec(memory)) is no_thp


@pytest.mark.parametrize(("shared", "share"), [(True, "share=on"), (False, "share=off")])
def test_a_template_ram_file_backs_guest_ram_without_free_page_reporting(shared: bool, share: str) -> None:
    argv = build_argv(_spec(MemoryBacking()), PATHS, QemuConfig(), "tcg", template_ram=Path("/t/a,b.ram"),
                      template_shared=shared)
    assert argv[argv.index("-machine") + 1] == "q35,memory-backend=pc.ram"
    assert f"memory-backend-file,id=pc.ram,mem-path=/t/a,,b.ram,size=256M,{share}" in argv
    # QEMU 7.2 would punch reported pages out of the file, under every guest of the template.
    assert "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=off" in argv
