"""The memory balancer through the API, the client and `yun cluster balance`: the plan (advise), applying it (auto).

Two real agents on FakeDrivers over the real protocol (``test_live_migration.two``: alice's server
on host A, then host B up).  What the hosts' memory managers report is seeded as their newest
ledger entries (dated ahead, so the agents' own reports of this machine never come after them).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.functional.compute import test_live_migration
from tests.functional.compute.test_aggregates import act, create
from tests.functional.compute.test_host_drain import client_for
from tests.functional.compute.test_live_migration import B, _done
from tests.functional.compute.test_servers import WAIT
from yunstack.cli import cluster
from yunstack.cli.main import app
from yunstack.client import ApiError
from yunstack.compute.balancer import BalancerService
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.types import utcnow
from yunstack.wiring import Services

host, world, qcow2, two = (test_live_migration.host, test_live_migration.world, test_live_migration.qcow2,
                           test_live_migration.two)
MIB = 1 << 20
GIB = 1 << 30
PATH = "/compute/v2.1/os-yunstack-memory-balancer"


def report(services: Services, name: str, used: float, guests: dict[str, int], *, age: float = -3600.0,
           dirty_rate: int | None = None, swap_in_rate: float | None = None, psi: float = 0.0) -> None:
    """``name``'s newest ledger entry: 4 GiB, ``used`` of it in use, ``guests`` (id -> resident bytes,
    each dirtying ``dirty_rate`` bytes/s); ``age`` seconds old (by default dated an hour ahead)."""
    entry = {"level": "none", "host": {"physical": 4 * GIB, "available": int((1 - used) * 4 * GIB),
                                       "psi_some_avg10": psi, "swap_in_rate": swap_in_rate},
             "guests": [{"instance_id": g, "resident": size, "working_set": size, "dirty_rate": dirty_rate}
                        for g, size in guests.items()]}
    with services.db.begin() as s:
        s.add(t.MemorySample(host=name, at=utcnow() - timedelta(seconds=age), data=entry))


def plan(w: dict[str, Any], token: str | None = None) -> Any:
    api = w["api"]
    return api.http.get(PATH, headers=api.headers(token or api.admin()))


def test_the_plan_moves_a_guest_off_a_host_over_its_target_and_advise_applies_nothing(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    r = plan(two)
    assert r.status_code == 200, r.text
    body = r.json()["memory_balancer"]
    assert body["mode"] == "advise"
    [move] = body["moves"]
    assert (move["guest"], move["source"], move["target"], move["advisory"]) == (sid, a, B, True)
    assert move["benefit"] == GIB and move["downtime_seconds"] > 0  # paused: the guest stops for the copy
    assert {h["host"]: (h["before_fraction"], h["after_fraction"]) for h in body["hosts"]}[B] == (0.1, 0.35)
    applied = two["api"].http.post(f"{PATH}/apply", headers=two["api"].headers(two["api"].admin()))
    assert applied.status_code == 202
    assert applied.json()["memory_balancer"]["applied"] == []  # advisory moves are never applied


def test_only_admins_see_the_plan(two: dict[str, Any]) -> None:
    assert plan(two, two["alice"].token).status_code == 403


def test_auto_applies_the_move_as_a_live_migration_and_the_guest_then_cools_down(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    services.balancer.mode = "auto"
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    r = two["api"].http.post(f"{PATH}/apply", headers=two["api"].headers(two["api"].admin()))
    assert r.status_code == 202, r.text
    assert r.json()["memory_balancer"]["applied"] == [{"server_id": sid, "target": B, "result": "queued", "why": ""}]
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    # Now B is the one over its target: the guest that just arrived stays (its cooldown).
    report(services, a, 0.10, {})
    report(services, B, 0.90, {sid: GIB})
    again = plan(two).json()["memory_balancer"]
    assert again["moves"] == []
    [why] = [r["reason"] for r in again["refusals"] if r["subject"] == sid]
    assert why.startswith(f"guest {sid} stays: moved ") and why.endswith("s ago, cooldown 300 s")


def test_mode_off_plans_nothing(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    services.balancer.mode = "off"
    report(services, services.config.host_name, 0.95, {two["server"]: GIB})
    body = plan(two).json()["memory_balancer"]
    assert (body["mode"], body["moves"], body["hosts"]) == ("off", [], [])


def test_the_client_and_yun_cluster_balance_show_the_plan(two: dict[str, Any], monkeypatch: Any) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    with client_for(services, "admin", "adminpw", "admin") as c:
        body = c.memory_balancer()
        assert [(m["guest"], m["target"], m["advisory"]) for m in body["moves"]] == [(sid, B, True)]
        assert c.memory_balancer(apply=True)["applied"] == []
        monkeypatch.setattr(cluster, "client", lambda cloud, state_dir: nullcontext(c))
        shown = CliRunner().invoke(app, ["cluster", "balance"])
        assert shown.exit_code == 0, shown.output
        assert "mode advise" in shown.output and sid in shown.output and B in shown.output
        as_json = CliRunner().invoke(app, ["cluster", "balance", "--apply", "--format", "json"])
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.output)["applied"] == []
    with client_for(services, "alice", "alice-pw", "alpha") as alice, pytest.raises(ApiError) as refused:
        alice.memory_balancer()
    assert refused.value.status == 403


def test_a_host_whose_newest_report_is_old_is_not_a_target(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    services.balancer.clock = lambda: utcnow() + timedelta(hours=2)  # the agents' own reports are old too
    report(services, services.config.host_name, 0.90, {two["server"]: GIB}, age=-7200)
    report(services, B, 0.10, {}, age=-3600)  # an hour old when the balancer plans
    body = plan(two).json()["memory_balancer"]
    assert body["moves"] == []
    assert any(r["subject"] == B and "has not reported its memory" in r["reason"] for r in body["refusals"])


def test_an_aggregates_mode_overrides_the_clusters_for_its_hosts(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    auto = create(two, "auto")
    for name in (a, B):
        assert act(two, auto["id"], "add_host", {"host": name}).status_code == 200
    assert act(two, auto["id"], "set_metadata", {"metadata": {"yunstack:memory_balancer": "auto"}}).status_code == 200
    [move] = plan(two).json()["memory_balancer"]["moves"]  # the cluster says advise, their aggregate auto
    assert (move["target"], move["advisory"]) == (B, False)
    off = create(two, "off")
    assert act(two, off["id"], "add_host", {"host": B}).status_code == 200
    assert act(two, off["id"], "set_metadata", {"metadata": {"yunstack:memory_balancer": "off"}}).status_code == 200
    body = plan(two).json()["memory_balancer"]  # B is in both: the more conservative mode wins
    assert body["moves"] == []
    assert f"host {B} takes no guest: its balancer mode is off" in [r["reason"] for r in body["refusals"]]
    services.balancer.mode = "off"  # the cluster off, but A's aggregate still says auto: A is still planned
    assert any(r["subject"] == a and "above its trigger" in r["reason"]
               for r in plan(two).json()["memory_balancer"]["refusals"])


def test_the_periodic_pass_applies_auto_moves_and_records_them_in_the_history_and_the_metrics(
        two: dict[str, Any], monkeypatch: Any) -> None:
    services: Services = two["api"].services
    api, a, sid = two["api"], services.config.host_name, two["server"]
    services.balancer.mode = "auto"
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    assert [(d.server_id, d.target, d.result) for d in services.balancer.auto_pass("req-pass-1")] == [
        (sid, B, "queued")]
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    actions = two["admin"].get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [(x["action"], x["user_id"]) for x in actions if x["request_id"] == "req-pass-1"] == [
        ("live-migration", "memory-balancer")]
    # The same quiet cluster again and again: one more pass recorded (its plan changed: no move), then none.
    report(services, a, 0.10, {})
    report(services, B, 0.50, {sid: GIB})
    assert services.balancer.auto_pass("req-pass-2") == []
    assert services.balancer.auto_pass("req-pass-3") == []
    r = api.http.get(f"{PATH}/history", headers=api.headers(api.admin()))
    assert r.status_code == 200, r.text
    passes = r.json()["passes"]
    assert [(p["trigger"], len(p["moves"]), [x["result"] for x in p["applied"]]) for p in passes] == [
        ("auto", 0, []), ("auto", 1, ["queued"])]
    assert passes[1]["moves"][0]["guest"] == sid and passes[1]["moves"][0]["reason"]
    with client_for(services, "admin", "adminpw", "admin") as c:
        assert [p["trigger"] for p in c.memory_balancer_history(limit=1)] == ["auto"]
        monkeypatch.setattr(cluster, "client", lambda cloud, state_dir: nullcontext(c))
        shown = CliRunner().invoke(app, ["cluster", "history", "--format", "json"])
        assert shown.exit_code == 0, shown.output
        assert [len(p["applied"]) for p in json.loads(shown.output)] == [0, 1]
        assert sid[:8] in CliRunner().invoke(app, ["cluster", "history"]).output
    metrics = api.http.get("/metrics").text
    assert 'yunstack_memory_balancer_moves{result="queued"} 1.0' in metrics
    assert 'yunstack_memory_balancer_planned_moves{advisory="false"} 0.0' in metrics
    assert "yunstack_memory_balancer_last_pass_timestamp_seconds " in metrics


def test_the_history_is_for_admins_and_a_bad_since_is_400(two: dict[str, Any]) -> None:
    api = two["api"]
    assert api.http.get(f"{PATH}/history", headers=api.headers(two["alice"].token)).status_code == 403
    bad = api.http.get(f"{PATH}/history", params={"since": "yesterday"}, headers=api.headers(api.admin()))
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["badRequest"]["message"]
    assert api.http.get(f"{PATH}/history", params={"since": "2026-01-01T00:00:00Z"},
                        headers=api.headers(api.admin())).json() == {"passes": []}


def _ended_move(services: Services, sid: str, status: str, source: str, dest: str, *, ago: float = 5.0) -> None:
    when = utcnow() - timedelta(seconds=ago)
    with services.db.begin() as s:
        s.add(mig.Migration(uuid=str(uuid.uuid4()), instance_uuid=sid, project_id="p", user_id="u",
                            migration_type="live-migration", status=status, source_compute=source, dest_compute=dest,
                            created_at=when, updated_at=when))


@pytest.mark.parametrize("status", ["error", "cancelled"])
def test_a_move_that_failed_or_was_cancelled_is_not_planned_again_within_the_cooldown(
        two: dict[str, Any], status: str) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    _ended_move(services, sid, status, a, B)
    body = plan(two).json()["memory_balancer"]
    assert body["moves"] == []
    assert any(r["subject"] == sid and "cooldown" in r["reason"] for r in body["refusals"]), body["refusals"]


@pytest.mark.parametrize(("left_ago", "moved"), [(30.0, False), (200.0, True)])
def test_a_host_under_pressure_below_its_trigger_loses_a_guest_once_its_last_one_has_settled(
        two: dict[str, Any], left_ago: float, moved: bool) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.50, {sid: GIB}, psi=30.0)  # half used, but its guests stall on memory
    report(services, B, 0.10, {})
    _ended_move(services, "another-server", "completed", a, B, ago=left_ago)
    body = plan(two).json()["memory_balancer"]
    if moved:
        [move] = body["moves"]
        assert (move["guest"], move["target"]) == (sid, B)
        assert "under memory pressure (PSI some 30% >= 10%) at 50% used" in move["reason"]
    else:
        assert body["moves"] == []
        [why] = [r["reason"] for r in body["refusals"] if r["subject"] == a]
        assert re.search(r"but a guest left it 3\d s ago: its pressure gets 120 s to fall first", why), why


def test_a_move_newer_than_its_hosts_reports_holds_them_until_they_report_again(two: dict[str, Any]) -> None:
    """The reports still show the guest on A (they predate its arrival on B): no second move off A
    and nothing more onto B until both have reported since."""
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    # Dated ahead (as ``report`` does by default), so the agents' own reports of this machine never
    # come after them: the reports, then the move's end a second later, then newer reports.
    report(services, a, 0.90, {sid: GIB}, age=-3600)
    report(services, B, 0.10, {}, age=-3600)
    _ended_move(services, "another-server", "completed", a, B, ago=-3601)
    body = plan(two).json()["memory_balancer"]
    assert body["moves"] == [], body
    assert any("move limits are reached" in r["reason"] for r in body["refusals"]), body["refusals"]
    report(services, a, 0.90, {sid: GIB}, age=-3602)
    report(services, B, 0.10, {}, age=-3602)
    assert [m["guest"] for m in plan(two).json()["memory_balancer"]["moves"]] == [sid]


def test_passes_at_the_same_moment_queue_a_move_once(two: dict[str, Any], monkeypatch: Any) -> None:
    """The attack: the periodic pass, an admin's apply and (PostgreSQL) another API process's pass
    all plan while the first is queueing its move.  Each would see the same room on B and the guest
    still on A; only one may queue."""
    services: Services = two["api"].services
    api, a, sid = two["api"], services.config.host_name, two["server"]
    services.balancer.mode = "auto"
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {})
    queueing, release = threading.Event(), threading.Event()
    original = services.compute.action

    def held(*args: Any, **kwargs: Any) -> Any:
        queueing.set()
        assert release.wait(WAIT)
        return original(*args, **kwargs)

    monkeypatch.setattr(services.compute, "action", held)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(services.balancer.auto_pass, "req-first")
        assert queueing.wait(WAIT)
        queueing.clear()
        assert services.balancer.auto_pass("req-periodic") == []  # this process's pass is running: skipped
        if services.db.kw["bind"].dialect.name == "postgresql":  # another API process: the cluster's lock
            other = BalancerService(services.db, services.hosts, services.compute, mode="auto")
            assert other.auto_pass("req-other-process") == []
        admin = pool.submit(api.http.post, f"{PATH}/apply", headers=api.headers(api.admin()))
        assert not queueing.wait(0.5)  # the admin's apply waits for the running pass, not beside it
        release.set()
        assert [(d.server_id, d.result) for d in first.result(WAIT)] == [(sid, "queued")]
        r = admin.result(WAIT)
    assert r.status_code == 202, r.text
    assert r.json()["memory_balancer"]["applied"] == []  # it planned after the first: the move is in flight
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    assert [m["instance_uuid"] for m in test_live_migration.migrations(two)] == [sid]


def test_a_guest_that_dirties_fast_costs_more_downtime_to_move_by_precopy(two: dict[str, Any]) -> None:
    """The ledger's dirty rate (QEMU's sampling) is the move's: a quiet guest converges, one that
    dirties faster than the link copies does not and is counted as stopped for its working set."""
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    services.balancer.tuning = replace(services.balancer.tuning, migration="precopy")
    downtime = {}
    for rate in (0, 4 * GIB):
        report(services, a, 0.90, {sid: GIB}, dirty_rate=rate, age=-3600 - rate / GIB)  # the newer wins
        report(services, B, 0.10, {}, age=-3600 - rate / GIB)
        [move] = plan(two).json()["memory_balancer"]["moves"]
        downtime[rate] = move["downtime_seconds"]
    bandwidth = services.balancer.tuning.bandwidth
    assert downtime[0] <= services.balancer.tuning.max_downtime_seconds
    assert downtime[4 * GIB] == pytest.approx(GIB / bandwidth, rel=0.01)


def test_a_host_that_swaps_takes_no_guest_and_the_refusal_says_how_fast(two: dict[str, Any]) -> None:
    services: Services = two["api"].services
    a, sid = services.config.host_name, two["server"]
    report(services, a, 0.90, {sid: GIB})
    report(services, B, 0.10, {}, swap_in_rate=8 * MIB)  # the ledger's /proc/vmstat rate
    body = plan(two).json()["memory_balancer"]
    assert body["moves"] == []
    assert any(r["subject"] == sid and f"{B}: it is swapping (in 8.0 MiB/s, out 0.0 MiB/s)" in r["reason"]
               for r in body["refusals"]), body["refusals"]
