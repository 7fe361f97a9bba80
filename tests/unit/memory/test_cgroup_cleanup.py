"""At shutdown the memory cgroup parent goes when no guest runs in it, and stays while one does."""

from __future__ import annotations

from pathlib import Path

from yunstack.cgroups import MemoryCgroups
from yunstack.memory.controllers import CgroupControl


def test_an_empty_parent_and_its_dead_guests_leaves_are_removed(tmp_path: Path) -> None:
    (tmp_path / "yunstack" / "vm-dead-1").mkdir(parents=True)
    (tmp_path / "yunstack" / "vm-dead-2").mkdir()
    assert CgroupControl(MemoryCgroups(tmp_path, 2), "yunstack").remove_if_unused()
    assert not (tmp_path / "yunstack").exists()


def test_a_parent_with_a_running_guest_stays_and_only_empty_leaves_go(tmp_path: Path) -> None:
    busy = tmp_path / "yunstack" / "vm-running"
    busy.mkdir(parents=True)
    (busy / "cgroup.procs").write_text("4242\n")  # rmdir of a cgroup with a process fails, as here
    (tmp_path / "yunstack" / "vm-dead").mkdir()
    assert not CgroupControl(MemoryCgroups(tmp_path, 2), "yunstack").remove_if_unused()
    assert busy.exists() and not (tmp_path / "yunstack" / "vm-dead").exists()


def test_a_parent_that_is_already_gone_is_fine(tmp_path: Path) -> None:
    assert CgroupControl(MemoryCgroups(tmp_path, 2), "yunstack").remove_if_unused()
    assert CgroupControl(None, "yunstack").remove_if_unused()
