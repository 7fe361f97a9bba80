"""Fixtures of the volume tests: the host agent (fake compute driver, real `file` backend), a world of
projects and users with their Cinder clients, and the compute tests' world as ``servers_world``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.compute.test_live_migration import B, OtherHost
from tests.functional.compute.test_servers import host, qcow2  # noqa: F401  (fixtures)
from tests.functional.compute.test_servers import world as servers_world  # noqa: F401  (a fixture)
from tests.functional.identity.test_identity_api import make_member
from tests.functional.volume.test_volume_api import Cinder
from yunstack.volume.export import NbdExports


@pytest.fixture
def world(api: Api, request: pytest.FixtureRequest) -> dict[str, Any]:
    request.getfixturevalue("host")  # the storage host's agent runs (by name: it is imported above)
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    make_member(api, admin, "alpha", "rita", role="reader")
    return {"admin": Cinder(api, admin), "alice": Cinder(api, api.login("alice", "alice-pw", "alpha"), a["project_id"]),
            "bob": Cinder(api, api.login("bob", "bob-pw", "beta"), b["project_id"]),
            "rita": Cinder(api, api.login("rita", "rita-pw", "alpha"), a["project_id"]), "a": a, "b": b, "api": api}




@pytest.fixture(autouse=True)
def _no_export_left(api: Api) -> Iterator[None]:
    """A test that failed half-way may leave a volume's NBD export serving (its daemon outlives the
    agent by design): stop what is left under this cloud's state directory."""
    yield
    exports = NbdExports(api.services.config.server.state_path / "exports")

    async def stop_all() -> None:
        for volume_id in {**await exports.running(), **await exports.stopped()}:
            await exports.stop(volume_id)

    asyncio.run(stop_all())


@pytest.fixture
def far_host(servers_world: dict[str, Any], tmp_path: Path) -> Iterator[OtherHost]:  # noqa: F811
    """Host B, a second agent on the fake driver, takes the new servers: the cloud's own host A (the
    storage host) is disabled for them while the test runs."""
    services = servers_world["api"].services
    storage = services.config.host_name
    other = OtherHost(services, B, tmp_path / "host-b")
    other.start()
    admin = servers_world["admin"].at("2.30")
    try:
        assert admin.put("/os-services/disable", {"host": storage, "binary": "nova-compute"}).status_code == 200
        yield other
    finally:
        admin.put("/os-services/enable", {"host": storage, "binary": "nova-compute"})
        other.stop()
