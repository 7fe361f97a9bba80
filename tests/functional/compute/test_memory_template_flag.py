"""``yunstack:memory_template`` on an image or a flavor reaches the host as the spec's
``MemoryBacking.template`` (docs/explanation/memory-templates.md); other servers never ask."""

from __future__ import annotations

from typing import Any

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import IM, boot

world, host, qcow2 = servers.world, servers.host, servers.qcow2


def _asked(world: dict[str, Any], server_id: str) -> bool:
    guest = world["host"].driver._guests[server_id]
    return bool(guest.spec.memory.template)


def test_an_image_property_asks_its_servers_to_start_from_a_template(world: dict[str, Any]) -> None:
    api, admin = world["api"], world["admin"]
    plain = boot(world, name="plain")
    assert not _asked(world, plain["id"])
    r = api.http.patch(f"{IM}/images/{world['image']}", headers={
        **api.headers(admin.token), "Content-Type": "application/openstack-images-v2.1-json-patch"},
        json=[{"op": "add", "path": "/yunstack:memory_template", "value": "true"}])
    assert r.status_code == 200, r.text
    templated = boot(world, name="templated")
    assert _asked(world, templated["id"])
    assert not _asked(world, plain["id"])  # a server keeps what its image said when it was made


def test_a_flavor_extra_spec_asks_and_its_false_wins_over_the_image(world: dict[str, Any]) -> None:
    admin = world["admin"]
    r = admin.post("/flavors/42/os-extra_specs", {"extra_specs": {"yunstack:memory_template": "True"}})
    assert r.status_code == 200, r.text
    assert _asked(world, boot(world, name="by-flavor")["id"])
    r = admin.post("/flavors/42/os-extra_specs", {"extra_specs": {"yunstack:memory_template": "false"}})
    assert r.status_code == 200, r.text
    api = world["api"]
    api.http.patch(f"{IM}/images/{world['image']}", headers={
        **api.headers(admin.token), "Content-Type": "application/openstack-images-v2.1-json-patch"},
        json=[{"op": "add", "path": "/yunstack:memory_template", "value": "true"}])
    assert not _asked(world, boot(world, name="flavor-says-no")["id"])
