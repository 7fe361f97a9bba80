"""The real `openstack aggregate ...` CLI (openstacksdk) against a real HTTP server: Nova's shapes are enough."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, need
from tests.functional.cli.test_yun_cli import served, services
from tests.functional.compute.test_flavors_keypairs_quotas import heartbeat

__all__ = ["served", "services"]  # fixtures, used by name
OPENSTACK = Path(sys.executable).parent / "openstack"


def openstack(clouds: Path, *args: str) -> Any:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)}
    done = subprocess.run([str(OPENSTACK), "--os-cloud", "yunstack", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "json" in args else done.stdout


# The CLI's requests do not depend on the database: one backend is enough (each `openstack` call is a
# slow subprocess).
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_openstack_aggregate_commands_work_end_to_end(api: Api, served: Path) -> None:
    need(OPENSTACK.exists(), "the openstack CLI (python-openstackclient)")
    heartbeat(api, "node1")
    created = openstack(served, "aggregate", "create", "--zone", "az-fast", "--property", "ssd=yes", "fast",
                        "-f", "json")
    assert created["name"] == "fast" and created["availability_zone"] == "az-fast"
    openstack(served, "aggregate", "add", "host", "fast", "node1")
    openstack(served, "aggregate", "set", "--property", "yunstack:memory_balancer=auto", "fast")
    openstack(served, "aggregate", "unset", "--property", "ssd", "fast")
    shown = openstack(served, "aggregate", "show", "fast", "-f", "json")
    assert shown["hosts"] == ["node1"]
    assert shown["properties"] == {"yunstack:memory_balancer": "auto"}
    listed = openstack(served, "aggregate", "list", "--long", "-f", "json")
    assert [(a["Name"], a["Availability Zone"]) for a in listed] == [("fast", "az-fast")]
    hypervisor = openstack(served, "hypervisor", "show", "node1", "-f", "json")
    assert hypervisor["aggregates"] == ["fast"]  # it reads os-aggregates
    zones = openstack(served, "availability", "zone", "list", "--compute", "-f", "json")
    assert {z["Zone Name"] for z in zones} == {"az-fast", "internal"}  # admins see the control plane too
    openstack(served, "aggregate", "remove", "host", "fast", "node1")
    openstack(served, "aggregate", "delete", "fast")
    assert openstack(served, "aggregate", "list", "-f", "json") == []
