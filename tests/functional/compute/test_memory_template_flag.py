"""``yunstack:memory_template`` on an image or a flavor reaches the host as the spec's
``MemoryBacking.template`` (docs/explanation/memory-templates.md); other servers never ask."""

from __future__ import annotations

import time
from typing import Any

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import IM, boot

world, host, qcow2 = servers.world, servers.host, servers.qcow2
MIB = 1 << 20


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


def test_a_server_that_will_be_a_clone_is_admitted_at_what_the_hosts_clones_cost(world: dict[str, Any]) -> None:
    # The host's manager reports 50 MiB of admission room and one clone of the image holding 40 MiB
    # of its own (the rest of its RSS is the template's shared page cache).  A plain server of flavor
    # 42 (128 MiB) is expected to need half its RAM, 64 MiB: refused, with the filter's reason.  One
    # asking for the template is expected to cost what the clone costs, 40 MiB: placed.
    api, admin, host = world["api"], world["admin"], world["host"]
    r = admin.post("/flavors/42/os-extra_specs", {"extra_specs": {"yunstack:memory_template": "true"}})
    assert r.status_code == 200, r.text
    first = boot(world, name="first")
    host.stop()  # its manager would report the real (fake) room over ours; the host stays up a while
    name = api.services.config.host_name
    api.services.memory.record(name, {
        "wall_time": time.time(), "level": "none",
        "host": {"physical": 4096 * MIB, "available": 1024 * MIB, "admission_room": 50 * MIB},
        "guests": [{"instance_id": first["id"], "template": "k1", "resident": 300 * MIB,
                    "template_shared": 260 * MIB},
                   {"instance_id": "not-a-server", "template": "k1", "resident": 900 * MIB}]})
    with api.services.db() as s:
        [state] = api.services.hosts.scheduling(s)
    assert state.clone_mib == {f"{world['image']}/128/1/1": 40}
    nova = world["alice"]
    clone = nova.post("/servers", servers.body(world, "clone"))
    assert clone.status_code == 202, clone.text
    placed = admin.get(f"/servers/{clone.json()['server']['id']}").json()["server"]
    assert placed["status"] == "BUILD" and placed["OS-EXT-SRV-ATTR:host"] == name  # its agent is stopped
    admin.post("/flavors/42/os-extra_specs", {"extra_specs": {"yunstack:memory_template": "false"}})
    plain = nova.post("/servers", servers.body(world, "plain"))
    assert plain.status_code == 202, plain.text
    fault = servers.wait_for(nova, plain.json()["server"]["id"], "ERROR")["fault"]
    assert (f"{name}: ObservedMemoryFilter: the guest is expected to need 64 MiB soon, the host has 50 MiB "
            "of room") in fault["message"]
