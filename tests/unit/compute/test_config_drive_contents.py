"""What a config drive holds beyond Nova's files, and the meta_data fields a cloned guest needs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from yunstack.compute.agentlink import RANDOM_SEED_BYTES, meta_data
from yunstack.compute.driver import ConfigDrive
from yunstack.compute.qemu.configdrive import VERSIONS, write_tree
from yunstack.db.tables import compute as t


def test_every_drive_carries_the_host_time_it_was_built_at_next_to_the_openstack_files(tmp_path: Path) -> None:
    drive = ConfigDrive(meta_data={"uuid": "u-1"}, user_data=b"#!/bin/sh\n")
    write_tree(drive, tmp_path, clock=lambda: 1764921600.12345)
    # Epoch seconds with milliseconds: what the guest's `date -s @N` needs, without the fraction.
    assert (tmp_path / "yunstack" / "host_time").read_text() == "1764921600.123\n"
    for version in VERSIONS:
        assert json.loads((tmp_path / "openstack" / version / "meta_data.json").read_bytes()) == {"uuid": "u-1"}


def test_a_drive_without_user_data_still_gets_the_host_time(tmp_path: Path) -> None:
    write_tree(ConfigDrive(meta_data={}), tmp_path, clock=lambda: 5.0)
    assert (tmp_path / "yunstack" / "host_time").read_text() == "5.000\n"
    assert not (tmp_path / "openstack" / "latest" / "user_data").exists()


def _row() -> t.Instance:
    return t.Instance(id="i-1", name="vm", hostname="vm", project_id="p", launch_index=0,
                      availability_zone="nova", meta={"a": "b"}, key_name=None, key_data=None)


def test_meta_data_carries_a_new_512_byte_random_seed_for_every_drive_as_nova_does() -> None:
    first, second = meta_data(_row()), meta_data(_row())
    seed = base64.b64decode(first["random_seed"], validate=True)
    assert len(seed) == RANDOM_SEED_BYTES == 512
    assert first["random_seed"] != second["random_seed"]
    assert {k: v for k, v in first.items() if k != "random_seed"} == {
        "uuid": "i-1", "name": "vm", "hostname": "vm", "launch_index": 0, "availability_zone": "nova",
        "project_id": "p", "meta": {"a": "b"}, "devices": [],
    }
