"""``availability_zone: "AZ:HOST"``: an admin puts a server on a named host (Nova's forced host)."""

from __future__ import annotations

from typing import Any

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_flavors_keypairs_quotas import heartbeat
from tests.functional.compute.test_servers import body, wait_for

world, host, qcow2 = servers.world, servers.host, servers.qcow2


def test_an_admin_forces_a_server_onto_a_named_host_and_its_zone_is_the_zone_alone(
        world: dict[str, Any], api: Any) -> None:
    heartbeat(api, "node2")
    own = world["host"].driver.hostname
    admin = world["admin"]
    for target in (own, "node2", own):
        r = admin.post("/servers", body(world, f"on-{target}", availability_zone=f"nova:{target}"))
        assert r.status_code == 202, r.text
        shown = admin.get(f"/servers/{r.json()['server']['id']}").json()["server"]
        assert shown["OS-EXT-SRV-ATTR:host"] == target
        assert shown["OS-EXT-AZ:availability_zone"] == "nova"
    r = admin.post("/servers", body(world, "node-form", availability_zone=f"nova::{own}"))
    assert admin.get(f"/servers/{r.json()['server']['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"] == own


def test_a_forced_host_that_cannot_take_the_server_fails_it_naming_every_host(world: dict[str, Any]) -> None:
    r = world["admin"].post("/servers", body(world, "nowhere", availability_zone="nova:no-such-host"))
    assert r.status_code == 202, r.text
    failed = wait_for(world["admin"], r.json()["server"]["id"], "ERROR")
    own = world["host"].driver.hostname
    assert f"{own}: ForceHostFilter: host 'no-such-host' was requested" in failed["fault"]["details"]


def test_a_member_may_not_force_a_host_and_nothing_is_created(world: dict[str, Any]) -> None:
    alice = world["alice"]
    own = world["host"].driver.hostname
    r = alice.post("/servers", body(world, "mine", availability_zone=f"nova:{own}"))
    assert r.status_code == 403, r.text
    assert "os_compute_api:servers:create:forced_host" in r.json()["forbidden"]["message"]
    assert alice.get("/servers").json()["servers"] == []
