"""The density benchmark's pure parts: workloads, arms' admission and claims, target verdicts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from yunstack.bench.density.arms import make_arm
from yunstack.bench.density.report import targets
from yunstack.bench.density.runner import first_used
from yunstack.bench.density.workloads import idle, scenario
from yunstack.compute.driver import ConfigDrive, InstanceSpec, root_disk
from yunstack.compute.qemu.templatestore import ineligible
from yunstack.config import QemuConfig
from yunstack.memory.model import MIB, GuestStats


def test_the_mixed_fleet_follows_the_design_mix() -> None:
    kinds = [scenario("mixed", i, seed=42).kind for i in range(16)]
    assert kinds.count("W1") == 8 and kinds.count("W2") == 4 and kinds.count("W0") + kinds.count("W3") == 4
    assert kinds.count("W3") == 2  # the idle quarter alternates W0 / W3


def test_a_bursty_guest_prints_from_the_start_instead_of_sleeping_its_offset() -> None:
    w2 = scenario("mixed", 9, seed=42)  # offset 63 s
    assert w2.kind == "W2" and "sleep" not in w2.user_data
    assert "--mib 32" in w2.user_data.split(";")[0] and "--seconds 123" in w2.user_data  # 60 s + 63 s offset
    w3 = scenario("mixed", 7, seed=42)
    assert w3.kind == "W3" and "--cache-mib 96" in w3.user_data and w3.active


def _guest(rss_mib: int) -> GuestStats:
    return GuestStats(instance_id="g", timestamp=0.0, configured=256 * MIB, balloon_actual=256 * MIB,
                      rss=rss_mib * MIB)


def test_a4_claims_the_next_guests_footprint_and_a4r_ramps_without_admission() -> None:
    a4 = make_arm("A4", budget=2048 * MIB, overhead=40 * MIB)
    a4r = make_arm("A4R", budget=2048 * MIB, overhead=40 * MIB)
    guests = [_guest(290), _guest(120)]
    assert a4.observed_admission and a4.claim(guests, 256 * MIB) == 290 * MIB
    assert a4.claim([], 256 * MIB) == (256 + 96) * MIB  # no guest yet: RAM + overhead
    assert not a4r.observed_admission and a4r.claim(guests, 256 * MIB) == 0
    assert a4r.admits([256 * MIB] * 100, 256 * MIB) and a4r.uses_ksm


def _row(n: float) -> dict[str, Any]:
    return {"n_max_median": n, "slowdown_p95_median": 0.0}


def test_targets_judge_both_a4_variants_against_the_best_single_mechanism() -> None:
    agg = {"mixed": {"A0": _row(6), "A2": _row(10), "A3": _row(9), "A4": _row(12), "A4R": _row(13)}}
    result = targets(agg, [])
    assert result["mixed"]["vs_a0"] == 2.0 and result["mixed"]["vs_best_single"] == 1.2
    assert not result["mixed"]["vs_best_single_ge_1.25"]
    assert result["mixed_ramp"]["vs_best_single"] == 1.3 and result["mixed_ramp"]["vs_best_single_ge_1.25"]


def test_first_used_gives_the_order_in_which_the_policy_reached_for_each_mechanism(tmp_path: Path) -> None:
    mib = 1 << 20
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"t": 1.0, "ksm_pages_sharing": 0, "swap": 0, "guests": [{"actual": 256 * mib}]},
        {"t": 2.0, "ksm_pages_sharing": 10, "swap": 4096, "guests": [{"actual": 256 * mib}]},  # noise
        {"t": 5.0, "ksm_pages_sharing": 10, "swap": 0, "guests": [{"actual": 200 * mib}, {"actual": None}]},
        {"t": 9.0, "ksm_pages_sharing": 0, "swap": 64 * mib, "guests": [{"actual": 256 * mib}]},
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert first_used(samples, 256 * mib) == {"ksm": 2.0, "balloon": 5.0, "swap": 9.0}
    assert first_used(tmp_path / "missing.jsonl", 256 * mib) == {"ksm": None, "balloon": None, "swap": None}


def test_a4t_is_a4_whose_guests_ask_for_a_memory_template() -> None:
    a4 = make_arm("A4", budget=2048 * MIB, overhead=40 * MIB)
    a4t = make_arm("A4T", budget=2048 * MIB, overhead=40 * MIB)
    assert a4t.templates and not a4.templates
    assert a4t.observed_admission and a4t.uses_ksm and a4t.claim([_guest(150)], 512 * MIB) == 150 * MIB
    memory = a4t.memory()
    assert memory.template and memory.page_sharing and not memory.thp  # a clone shares the template's pages
    assert not a4.memory().template
    assert a4t.constants()["memory"] == {"page_sharing": True, "thp": False, "template": True}


def test_a4t_guests_pass_the_drivers_template_eligibility(tmp_path: Path) -> None:
    image = tmp_path / "tiny.qcow2"
    image.write_bytes(b"")
    spec = InstanceSpec(id="g", name="d0", hostname="density", vcpus=1, memory_mib=512,
                        disks=root_disk(image, size_gib=1),
                        config_drive=ConfigDrive(meta_data={"uuid": "g"}, user_data=idle().user_data.encode()),
                        memory=make_arm("A4T", budget=2048 * MIB, overhead=40 * MIB).memory())
    assert ineligible(spec, QemuConfig().machine) is None


def test_an_idle_workload_says_when_its_user_data_ran() -> None:
    w0 = idle()
    assert w0.started and w0.started in w0.user_data  # how the run sees that a clone ran its own user_data


def test_a4t_claims_a_clones_footprint_once_a_clone_runs() -> None:
    a4t = make_arm("A4T", budget=2048 * MIB, overhead=40 * MIB)
    booted = _guest(173)
    clone = replace(_guest(98), template="t1", anonymous=56 * MIB)
    assert a4t.claim([booted], 512 * MIB) == 173 * MIB  # the template's first clone: like the booted guest
    assert a4t.claim([booted, clone], 512 * MIB) == 56 * MIB
    assert make_arm("A4", budget=2048 * MIB, overhead=40 * MIB).claim([booted, clone], 512 * MIB) == 173 * MIB


def test_the_templates_target_is_eight_times_consolidation_of_identical_idle_guests() -> None:
    def ident(c: float) -> dict[str, Any]:
        return {"ident": {"A4T": {"n_max_median": c * 4, "consolidation_median": c}}}
    assert targets(ident(8.25), [])["ident_templates_consolidation_ge_8"] == {"value": 8.25, "met": True}
    assert not targets(ident(7.0), [])["ident_templates_consolidation_ge_8"]["met"]
    assert "ident_templates_consolidation_ge_8" not in targets({"ident": {}}, [])
