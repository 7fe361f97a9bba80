"""The lab's pure parts: its underlay range and its hosts' names (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import make_config
from yunstack.errors import BadRequest
from yunstack.lab.cluster import LabCluster, lab_cidr
from yunstack.wiring import Services


def test_a_labs_underlay_is_a_private_24_fixed_by_its_state_dir(tmp_path: Path) -> None:
    a, b = lab_cidr(tmp_path / "a"), lab_cidr(tmp_path / "b")
    assert a == lab_cidr(tmp_path / "a")
    for cidr in (a, b):
        net = ipaddress.IPv4Network(cidr)
        assert net.prefixlen == 24 and net.subnet_of(ipaddress.IPv4Network("10.250.0.0/16"))
        assert 100 <= int(cidr.split(".")[2]) < 250  # clear of the VXLAN test's 10.250.77.0/24


def test_lab_hosts_are_named_and_reach_the_control_plane_at_the_gateway(tmp_path: Path) -> None:
    config = make_config(tmp_path, "sqlite://", server={"state_dir": str(tmp_path / "s"), "port": 9876})
    lab = LabCluster(config, cast(Services, None), 3)
    host = lab.underlay.host(2)
    assert lab.host_name(host) == "lab-h2"
    assert lab.control_url == f"http://{lab.gateway_ip}:9876"
    assert lab.cgroup_parent(host) == f"yunstack-lab-{lab.tag}-h2"
    assert lab.root == tmp_path / "s" / "lab"


@pytest.mark.parametrize("count", [0, 17])
def test_a_lab_has_one_to_sixteen_hosts(tmp_path: Path, count: int) -> None:
    config = make_config(tmp_path, "sqlite://")
    with pytest.raises(BadRequest, match="from 1 to 16"):
        LabCluster(config, cast(Any, None), count)
