"""Cold migration and resize to another host, with confirm and revert: two real agents on FakeDrivers.

Host A is the cloud's own host; host B joins over the real HTTP protocol after the server booted
on A (the fixtures of ``test_live_migration``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import select

from tests.functional.compute.test_agent_migration_sync import _in_loop
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_live_migration import B, OtherHost, host, migrations, qcow2, two, world
from tests.functional.compute.test_live_migration_crash import _lose_first_answer
from tests.functional.compute.test_server_groups import boot_in, make_group
from tests.functional.compute.test_servers import WAIT, Host, action, body, until, wait_for
from yunstack.compute.driver import PowerState
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import DriverError

__all__ = ["host", "qcow2", "two", "world"]  # fixtures


def migrate(nova: Nova, server_id: str) -> Any:
    return action(nova, server_id, {"migrate": None})


def settled(w: dict[str, Any], status: str) -> dict[str, Any]:
    """The server once it shows ``status`` (``wait_for`` waits until no task runs)."""
    return wait_for(w["admin"], w["server"], status)


def newest(w: dict[str, Any]) -> dict[str, Any]:
    return migrations(w)[0]


def usage(w: dict[str, Any]) -> dict[str, int]:
    """Each host's allocated RAM as ``os-hypervisors`` shows it."""
    r = w["admin"].get("/os-hypervisors/detail")
    assert r.status_code == 200, r.text
    return {h["hypervisor_hostname"]: h["memory_mb_used"] for h in r.json()["hypervisors"]}


def test_a_cold_migration_moves_the_server_powered_off_and_the_confirm_removes_the_source_copy(
        two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid, source = two["server"], a.services.config.host_name
    a.driver._guests[sid].disk_generation = 7  # what the guest wrote: it must arrive
    empty = usage(two)[B]  # the host's reserved memory alone
    r = migrate(two["admin"], sid)
    assert r.status_code == 202 and r.content == b"", r.text
    server = settled(two, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == B and server["OS-EXT-STS:power_state"] == 1
    arrived = b.driver._guests[sid]
    assert arrived.state == PowerState.RUNNING and arrived.disk_generation == 7
    assert arrived.console[-1].startswith("YUNSTACK-READY")  # a cold boot on the destination
    left = a.driver._guests[sid]
    assert left.state == PowerState.SHUTDOWN and left.exports == []  # stopped, its one-shot export read
    m = newest(two)
    assert (m["status"], m["migration_type"], m["source_compute"], m["dest_compute"]) == (
        "finished", "migration", source, B)
    # Until the confirm the source keeps the server's size for a revert, the destination has it too.
    used = usage(two)
    assert used[source] == used[B] == empty + 128
    # The source's power sync must not take the stopped copy for an orphan.
    assert a.agent is not None
    _in_loop(a, a.agent._sync_power)
    assert sid in a.driver._guests
    r = action(two["admin"], sid, {"confirmResize": None})
    assert r.status_code == 204, r.text
    server = settled(two, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == B
    until(lambda: newest(two)["status"] == "confirmed")
    assert sid not in a.driver._guests
    assert usage(two)[source] == empty
    actions = two["alice"].get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [x["action"] for x in actions][:2] == ["confirmResize", "migrate"]


def test_a_revert_brings_the_server_back_running_on_its_source(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid, source = two["server"], a.services.config.host_name
    assert migrate(two["admin"], sid).status_code == 202
    settled(two, "VERIFY_RESIZE")
    r = action(two["admin"], sid, {"revertResize": None})
    assert r.status_code == 202, r.text
    server = settled(two, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == source and server["OS-EXT-STS:power_state"] == 1
    until(lambda: newest(two)["status"] == "reverted")
    assert sid not in b.driver._guests
    assert a.driver._guests[sid].state == PowerState.RUNNING


def test_a_stopped_server_moves_and_stays_stopped(two: dict[str, Any]) -> None:
    b: OtherHost = two["b"]
    sid = two["server"]
    assert action(two["alice"], sid, {"os-stop": None}).status_code == 202
    wait_for(two["alice"], sid, "SHUTOFF")
    assert migrate(two["admin"], sid).status_code == 202
    server = settled(two, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == B and server["OS-EXT-STS:power_state"] == 4
    assert b.driver._guests[sid].state == PowerState.SHUTDOWN
    assert action(two["admin"], sid, {"confirmResize": None}).status_code == 204
    assert settled(two, "SHUTOFF")["OS-EXT-SRV-ATTR:host"] == B


def test_a_resize_that_does_not_fit_its_disabled_host_moves_to_another_and_reverts_to_the_old_flavor(
        two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid, source = two["server"], a.services.config.host_name
    r = two["admin"].put("/os-services/disable", {"host": source, "binary": "nova-compute"})
    assert r.status_code == 200, r.text
    nova = two["alice"].at("2.47")
    assert action(nova, sid, {"resize": {"flavorRef": "84"}}).status_code == 202
    server = wait_for(nova, sid, "VERIFY_RESIZE")
    assert server["flavor"]["original_name"] == "m1.micro"
    assert b.driver._guests[sid].spec.memory_mib == 192  # the new size, on the other host
    assert a.driver._guests[sid].spec.memory_mib == 128  # the old guest, kept stopped for a revert
    m = newest(two)
    assert (m["migration_type"], m["status"], m["new_instance_type_id"]) == ("resize", "finished", 84)
    assert action(nova, sid, {"revertResize": None}).status_code == 202
    server = wait_for(nova, sid, "ACTIVE")
    assert server["flavor"]["original_name"] != "m1.micro"
    with two["api"].services.db() as s:
        row = s.get(t.Instance, sid)
        assert row is not None and row.host == source and row.flavor["id"] == "42" and row.old_flavor is None
    assert a.driver._guests[sid].state == PowerState.RUNNING and sid not in b.driver._guests


def test_a_destination_that_fails_leaves_the_server_running_on_its_source_and_says_why(
        two: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid, source = two["server"], a.services.config.host_name

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise DriverError(detail="disk full")

    monkeypatch.setattr(b.driver, "import_disks", broken)
    assert migrate(two["admin"], sid).status_code == 202
    until(lambda: newest(two)["status"] == "error")
    server = wait_for(two["admin"], sid, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == source
    assert a.driver._guests[sid].state == PowerState.RUNNING and a.driver._guests[sid].exports == []
    assert sid not in b.driver._guests
    with two["api"].services.db() as s:
        row = s.get(t.Instance, sid)
        assert row is not None and row.old_flavor is None
        record = s.scalars(select(mig.Migration)).one()
        assert record.error is not None and "disk full" in record.error and B in record.error


def test_only_an_admin_migrates_and_with_no_other_host_it_is_400_with_the_reasons(two: dict[str, Any]) -> None:
    sid = two["server"]
    assert migrate(two["alice"], sid).status_code == 403
    assert migrate(two["bob"], sid).status_code == 404
    assert action(two["admin"], sid, {"migrate": {"host": B}}).status_code == 400  # host needs 2.56
    b: OtherHost = two["b"]
    r = two["admin"].put("/os-services/disable", {"host": B, "binary": "nova-compute"})
    assert r.status_code == 200, r.text
    r = migrate(two["admin"], sid)
    assert r.status_code == 400, r.text
    message = r.json()["badRequest"]["message"]
    assert "No valid host was found" in message and f"{B}: ComputeFilter" in message
    assert migrations(two) == []
    del b


def test_deleting_a_server_that_waits_for_its_confirm_removes_both_copies(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    assert migrate(two["admin"], sid).status_code == 202
    settled(two, "VERIFY_RESIZE")
    assert two["alice"].delete(f"/servers/{sid}").status_code == 204
    until(lambda: two["alice"].get(f"/servers/{sid}").status_code == 404)
    assert sid not in b.driver._guests
    assert newest(two)["status"] == "confirmed"  # as Nova: a delete confirms
    assert a.agent is not None
    _in_loop(a, a.agent._sync_power)  # the source's stopped copy is nobody's now
    assert sid not in a.driver._guests


def test_deleting_a_server_while_its_disks_move_leaves_no_copy_on_either_host(
        two: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    copying, release = threading.Event(), threading.Event()
    original = b.driver.import_disks

    async def slow(*args: Any, **kwargs: Any) -> int:
        copied = await original(*args, **kwargs)  # the disks are here; the step has not ended yet
        copying.set()
        await asyncio.to_thread(release.wait, WAIT)
        return copied

    monkeypatch.setattr(b.driver, "import_disks", slow)
    assert migrate(two["admin"], sid).status_code == 202
    assert copying.wait(WAIT)
    assert two["alice"].delete(f"/servers/{sid}").status_code == 204
    until(lambda: sid not in a.driver._guests)  # the delete went to the server's host, the source
    release.set()
    until(lambda: two["alice"].get(f"/servers/{sid}").status_code == 404)
    m = newest(two)
    assert m["status"] == "error", m
    agent = b.agent
    assert agent is not None
    until(lambda: not agent._inflight)  # its report was ignored: the delete took the step from it
    _in_loop(b, agent._sync_power)  # the copy that arrived belongs to no server and no migration
    assert sid not in b.driver._guests


def test_a_move_keeps_the_servers_group_policy_and_says_which_host_it_would_break(two: dict[str, Any]) -> None:
    group = make_group(two, "anti-affinity")
    first, second = boot_in(two, group["id"], "g1"), boot_in(two, group["id"], "g2")
    for sid in (first, second):
        wait_for(two["alice"], sid, "ACTIVE")
    other = two["admin"].get(f"/servers/{second}").json()["server"]["OS-EXT-SRV-ATTR:host"]
    r = migrate(two["admin"], first)  # the only other host runs the group's other member
    assert r.status_code == 400, r.text
    assert f"{other}: ServerGroupAntiAffinityFilter" in r.json()["badRequest"]["message"]
    r = action(two["admin"].at("2.30"), first, {"os-migrateLive": {"host": None, "block_migration": "auto"}})
    assert r.status_code == 400, r.text
    assert f"{other}: ServerGroupAntiAffinityFilter" in r.json()["badRequest"]["message"]
    assert [m for m in migrations(two) if m["instance_uuid"] == first] == []


def test_a_move_keeps_the_zone_the_server_was_created_in(two: dict[str, Any]) -> None:
    """Nova's request spec: the zone a server was created in binds its moves (a server created
    without one may go anywhere: the next test)."""
    admin = two["admin"]
    until(lambda: B in {s["host"] for s in admin.get("/os-services").json()["services"]})
    agg = admin.post("/os-aggregates", {"aggregate": {"name": "b", "availability_zone": "az-b"}}).json()["aggregate"]
    assert admin.post(f"/os-aggregates/{agg['id']}/action", {"add_host": {"host": B}}).status_code == 200
    r = two["alice"].post("/servers", body(two, "pinned", availability_zone="nova"))
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    assert wait_for(two["alice"], sid, "ACTIVE")["OS-EXT-AZ:availability_zone"] == "nova"
    zone_refusal = f"{B}: AvailabilityZoneFilter: host is in 'az-b', 'nova' requested"
    r = migrate(admin, sid)
    assert r.status_code == 400 and zone_refusal in r.json()["badRequest"]["message"], r.text
    r = action(admin.at("2.30"), sid, {"os-migrateLive": {"host": None, "block_migration": "auto"}})
    assert r.status_code == 400 and zone_refusal in r.json()["badRequest"]["message"], r.text
    assert [m for m in migrations(two) if m["instance_uuid"] == sid] == []


@pytest.mark.parametrize("stopped", [False, True])
def test_a_lost_answer_of_the_destinations_finish_is_repeated_and_the_move_still_arrives(
        two: dict[str, Any], stopped: bool) -> None:
    b: OtherHost = two["b"]
    sid = two["server"]
    if stopped:
        assert action(two["alice"], sid, {"os-stop": None}).status_code == 202
        wait_for(two["alice"], sid, "SHUTOFF")
    assert b.agent is not None
    lost = _lose_first_answer(b.agent, "cold_migration_finish")
    assert migrate(two["admin"], sid).status_code == 202
    server = settled(two, "VERIFY_RESIZE")
    assert lost == ["cold_migration_finish"]
    assert server["OS-EXT-SRV-ATTR:host"] == B and newest(two)["status"] == "finished"
    assert b.driver._guests[sid].state == (PowerState.SHUTDOWN if stopped else PowerState.RUNNING)


def test_a_server_moved_into_an_aggregates_zone_shows_that_zone_and_its_own_again_after_a_revert(
        two: dict[str, Any]) -> None:
    admin, sid = two["admin"], two["server"]
    until(lambda: B in {s["host"] for s in admin.get("/os-services").json()["services"]})
    agg = admin.post("/os-aggregates", {"aggregate": {"name": "b", "availability_zone": "az-b"}}).json()["aggregate"]
    assert admin.post(f"/os-aggregates/{agg['id']}/action", {"add_host": {"host": B}}).status_code == 200
    assert admin.get(f"/servers/{sid}").json()["server"]["OS-EXT-AZ:availability_zone"] == "nova"
    assert migrate(admin, sid).status_code == 202
    server = settled(two, "VERIFY_RESIZE")
    assert (server["OS-EXT-SRV-ATTR:host"], server["OS-EXT-AZ:availability_zone"]) == (B, "az-b")
    r = admin.post(f"/os-aggregates/{agg['id']}/action", {"remove_host": {"host": B}})
    assert r.status_code == 409, r.text  # B runs the server now: its zone stays
    assert action(admin, sid, {"revertResize": None}).status_code == 202
    server = settled(two, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] != B and server["OS-EXT-AZ:availability_zone"] == "nova"
