"""The QEMU driver's listing (the power-state pass reads it) survives a guest destroyed meanwhile."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from yunstack.compute.driver import InstanceSpec
from yunstack.compute.qemu import driver as qemu_driver
from yunstack.compute.qemu import specfile
from yunstack.compute.qemu.cmdline import InstancePaths
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, ServerConfig
from yunstack.errors import DriverError

VANISHING = "00000000-0000-0000-0000-00000000dead"


def _driver(tmp_path: Path) -> QemuDriver:
    return QemuDriver(Config(server=ServerConfig(state_dir=str(tmp_path))), cgroup_parent="")


def test_a_guest_whose_directory_vanishes_while_listing_is_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = _driver(tmp_path)
    directory = driver._root / VANISHING
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text("{}")
    real = specfile.load_spec

    def destroyed_meanwhile(paths: InstancePaths) -> InstanceSpec:
        shutil.rmtree(directory)  # a delete finished between the listing and this read
        return real(paths)

    monkeypatch.setattr(qemu_driver.specfile, "load_spec", destroyed_meanwhile)
    assert asyncio.run(driver.list_instances()) == []


def test_a_spec_that_is_there_but_unreadable_is_still_an_error(tmp_path: Path) -> None:
    driver = _driver(tmp_path)
    directory = driver._root / VANISHING
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"not": "a spec"})[:5])
    with pytest.raises(DriverError):
        asyncio.run(driver.list_instances())


def test_a_start_from_a_template_an_agent_died_in_is_undone_at_its_next_start(tmp_path: Path) -> None:
    """A clone whose identity or config drive never came would run as somebody else for good if its
    re-run spawn adopted it: the agent's start removes it, so that the spawn starts it anew."""
    driver = _driver(tmp_path)
    unfinished, finished = driver._root / VANISHING, driver._root / "00000000-0000-0000-0000-00000000f00d"
    for directory in (unfinished, finished):
        directory.mkdir(parents=True)
        (directory / "spec.json").write_text("{}")
        (directory / "qemu.pid").write_text("999999999\n")  # its QEMU is gone too (no process to kill)
    (unfinished / "clone-pending").touch()
    asyncio.run(driver._undo_unfinished_clones())
    assert not unfinished.exists() and finished.exists()
