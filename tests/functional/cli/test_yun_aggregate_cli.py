"""`yun aggregate ...` against a real HTTP server: an admin manages aggregates by name, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Api
from tests.functional.cli.test_yun_cli import served, services, yun
from tests.functional.compute.test_flavors_keypairs_quotas import heartbeat

__all__ = ["served", "services"]  # fixtures, used by name


def test_yun_aggregate_commands_manage_an_aggregate_by_name(api: Api, served: Path) -> None:
    heartbeat(api, "node1")
    created = json.loads(yun(served, "aggregate", "create", "fast", "--zone", "az-fast", "-f", "json"))
    assert created["name"] == "fast" and created["availability_zone"] == "az-fast" and "uuid" in created
    shown = json.loads(yun(served, "aggregate", "add-host", "fast", "node1", "-f", "json"))
    assert shown["hosts"] == ["node1"]
    shown = json.loads(yun(served, "aggregate", "set", "fast", "--property", "yunstack:memory_balancer=advise",
                           "--property", "ssd=yes", "--name", "quick", "-f", "json"))
    assert shown["name"] == "quick"
    assert shown["metadata"] == {"availability_zone": "az-fast", "ssd": "yes", "yunstack:memory_balancer": "advise"}
    assert api.services.compute.aggregates.mode_for_hosts("off") == {"node1": "advise"}
    shown = json.loads(yun(served, "aggregate", "set", str(created["id"]), "--unset", "ssd", "-f", "json"))
    assert "ssd" not in shown["metadata"]
    out = yun(served, "aggregate", "list")
    assert "quick" in out and "az-fast" in out and "node1" in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert json.loads(yun(served, "aggregate", "show", "quick", "-f", "json"))["id"] == created["id"]
    yun(served, "aggregate", "remove-host", "quick", "node1")
    yun(served, "aggregate", "delete", "quick")
    assert json.loads(yun(served, "aggregate", "list", "-f", "json")) == []
