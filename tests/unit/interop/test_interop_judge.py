"""The interop stage's judge: target matching by idempotent id, the summary, and the verdict."""

from __future__ import annotations

import re

import pytest
from tests.interop.guideline import derive, needs_block_storage
from tests.interop.results import Outcome, judge
from tests.interop.targets import (
    Target,
    include_list,
    load_expected_failures,
    load_targets,
    parse_listed,
    split_name,
)

NET = Target(name="tempest.api.network.test_networks.NetworksTest.test_list_networks",
             idempotent_id="f7ffdeda-e200-4a7a-bcbe-05716e86bf43", capability="networks-l2-CRUD",
             flagged=False, volume=False)
VOL = Target(name="tempest.api.volume.test_volumes_list.VolumesListTestJSON.test_volume_list",
             idempotent_id="0b6ddd39-b948-471f-8038-4787978747c4", capability="volumes-v3-list",
             flagged=False, volume=True)
# Tempest renamed the class since the guideline was written; the id still finds it.
LISTED = parse_listed([
    "tempest.api.network.test_networks.NetworksTestRenamed.test_list_networks"
    "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43,smoke]",
    "tempest.api.volume.test_volumes_list.VolumesListTestJSON.test_volume_list"
    "[id-0b6ddd39-b948-471f-8038-4787978747c4]",
    "some noise from the runner",
])
NET_NOW = "tempest.api.network.test_networks.NetworksTestRenamed.test_list_networks"
VOL_NOW = "tempest.api.volume.test_volumes_list.VolumesListTestJSON.test_volume_list"


def test_listed_tests_are_found_by_idempotent_id_even_when_renamed() -> None:
    regexes, missing = include_list([NET, VOL], LISTED)
    assert missing == []
    assert any(re.match(r, NET_NOW + "[id-x]") for r in regexes)


def test_include_regexes_are_anchored_so_a_prefix_does_not_select_a_longer_name() -> None:
    regexes, _ = include_list([NET], LISTED)
    assert not any(re.match(r, NET_NOW + "_fields[id-x]") for r in regexes)


def test_a_target_tempest_no_longer_has_is_reported_missing() -> None:
    gone = Target(name="tempest.api.x.Gone.test_gone", idempotent_id="00000000-0000-0000-0000-000000000000",
                  capability="c", flagged=False, volume=False)
    _, missing = include_list([NET, gone], LISTED)
    assert missing == [gone]
    summary = judge([Outcome(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43,smoke]", "success")],
                    [NET, gone], LISTED, set())
    assert summary.ok and summary.missing == [gone.name]


def test_split_name_strips_the_attributes_and_returns_the_id() -> None:
    assert split_name(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43,smoke]") == (
        NET_NOW, "f7ffdeda-e200-4a7a-bcbe-05716e86bf43")
    assert split_name("setUpClass (a.B)") == ("setUpClass (a.B)", None)


def test_all_passing_is_ok_and_counted() -> None:
    summary = judge([Outcome(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43]", "success"),
                     Outcome(VOL_NOW + "[id-0b6ddd39-b948-471f-8038-4787978747c4]", "success")],
                    [NET, VOL], LISTED, set())
    data = summary.as_json("2020.06")
    assert summary.ok and data["counts"]["passed"] == 2 and data["counts"]["failed"] == 0


def test_a_failure_fails_the_stage_with_its_detail() -> None:
    summary = judge([Outcome(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43]", "fail",
                             "Traceback...\nAssertionError: 404 != 200")], [NET], LISTED, set())
    data = summary.as_json("2020.06")
    assert not summary.ok
    assert data["failed"] == {NET_NOW: "AssertionError: 404 != 200"}
    assert "404 != 200" in data["tests"][0]["detail"]


def test_a_volume_failure_fails_the_stage_unless_listed() -> None:
    failing = [Outcome(VOL_NOW + "[id-0b6ddd39-b948-471f-8038-4787978747c4]", "fail", "no endpoint")]
    assert not judge(failing, [VOL], LISTED, set()).ok  # block storage is served: it counts
    listed = judge(failing, [VOL], LISTED, {VOL.idempotent_id})
    assert listed.ok and listed.tests[0]["result"] == "expected failure"


def test_a_listed_expected_failure_that_passes_fails_the_stage() -> None:
    summary = judge([Outcome(VOL_NOW + "[id-0b6ddd39-b948-471f-8038-4787978747c4]", "success")],
                    [VOL], LISTED, {VOL.idempotent_id})
    assert not summary.ok
    assert summary.tests[0]["result"] == "unexpected pass"
    assert "remove it from the list" in summary.reasons[0]


def test_a_skip_keeps_its_reason_and_does_not_fail_the_stage() -> None:
    summary = judge([Outcome(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43]", "skip",
                             "Resize is not available.")], [NET], LISTED, set())
    data = summary.as_json("2020.06")
    assert summary.ok and data["skip_reasons"] == {"Resize is not available.": 1}


def test_a_class_that_failed_to_set_up_fails_each_of_its_tests() -> None:
    cls = NET_NOW.rsplit(".", 1)[0]
    summary = judge([Outcome(f"setUpClass ({cls})", "fail", "IdentityError: no free account")],
                    [NET], LISTED, set())
    assert not summary.ok
    assert summary.tests[0]["result"] == "failed" and "no free account" in summary.tests[0]["detail"]


def test_a_class_skipped_in_set_up_skips_each_of_its_tests_with_the_reason() -> None:
    cls = VOL_NOW.rsplit(".", 1)[0]
    summary = judge([Outcome(f"setUpClass ({cls})", "skip", "Cinder not available")], [VOL], LISTED, set())
    assert summary.ok and summary.tests[0] == {**summary.tests[0], "result": "skipped",
                                               "detail": "Cinder not available"}


def test_a_failed_class_cleanup_fails_the_stage() -> None:
    cls = NET_NOW.rsplit(".", 1)[0]
    summary = judge([Outcome(NET_NOW + "[id-f7ffdeda-e200-4a7a-bcbe-05716e86bf43]", "success"),
                     Outcome(f"tearDownClass ({cls})", "fail", "Conflict: port in use")], [NET], LISTED, set())
    assert not summary.ok and summary.class_errors[0]["id"] == f"tearDownClass ({cls})"


def test_a_target_without_any_result_fails_the_stage() -> None:
    summary = judge([], [NET], LISTED, set())
    assert not summary.ok and summary.tests[0]["result"] == "not run"


def test_the_guideline_derivation_keeps_the_platform_tests_and_marks_volume_ones() -> None:
    guideline = {
        "metadata": {"id": "2020.06", "source": "x"},
        "platforms": {"OpenStack Powered Compute": {"components": [{"name": "c"}]}},
        "components": {"c": {"capabilities": {"required": ["compute-volume-attach", "networks-l2-CRUD"]}}},
        "capabilities": {
            "compute-volume-attach": {"tests": {"t.a": {"idempotent_id": "id-1"}}},
            "networks-l2-CRUD": {"tests": {"t.b": {"idempotent_id": "id-2", "flagged": {"reason": "r"}}}},
        },
    }
    tests = derive(guideline)["tests"]
    assert [(t["name"], t["idempotent_id"], t["volume"], t["flagged"]) for t in tests] == [
        ("t.a", "1", True, False), ("t.b", "2", False, True)]


@pytest.mark.parametrize("capability,volume", [("volumes-v3-list", True), ("compute-volume-attach", True),
                                               ("compute-servers-create", False), ("networks-l3-router", False)])
def test_block_storage_capabilities_are_told_by_name(capability: str, volume: bool) -> None:
    assert needs_block_storage(capability) is volume


def test_the_committed_lists_agree() -> None:
    targets = load_targets()
    assert len(targets) == 228 and len({t.idempotent_id for t in targets}) == 228
    expected = load_expected_failures(targets=targets)
    assert expected <= {t.idempotent_id for t in targets if t.volume}


def test_only_block_storage_tests_may_be_listed_as_expected_failures(tmp_path) -> None:
    bad = tmp_path / "xfail.txt"
    bad.write_text(f"{NET.idempotent_id}  {NET.name}\n")
    with pytest.raises(ValueError, match="does not need block storage"):
        load_expected_failures(bad, targets=[NET, VOL])


def test_an_id_shared_by_subclasses_resolves_to_the_guideline_class() -> None:
    t = Target(name="tempest.api.compute.servers.test_create_server.ServersTestJSON.test_list_servers",
               idempotent_id="9a438d88-10c6-4bcd-8b5b-5b6e25e1346f", capability="compute-servers-list",
               flagged=False, volume=False)
    base = "tempest.api.compute.servers.test_create_server."
    listed = parse_listed([f"{base}{cls}.test_list_servers[id-9a438d88-10c6-4bcd-8b5b-5b6e25e1346f]"
                           for cls in ("ServersTestBootFromVolume", "ServersTestJSON", "ServersTestManualDisk")])
    regexes, _ = include_list([t], listed)
    assert regexes == ["^" + re.escape(t.name) + r"\["]


def test_the_cause_is_the_http_details_line_or_the_first_exception_line() -> None:
    from tests.interop.results import cause

    http = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
            "    tempest.lib.exceptions.BadRequest: Bad request\nDetails: {'code': 400, 'message': 'no'}\n")
    assert cause(http) == "Details: {'code': 400, 'message': 'no'}"
    schema = ("    jsonschema.exceptions.ValidationError: Additional properties are not allowed ('x' was unexpected)\n"
              "Failed validating 'additionalProperties'\n")
    assert cause(schema).startswith("jsonschema.exceptions.ValidationError: Additional properties")


def test_the_tempest_conf_parses_with_plain_booleans_and_the_cloud_facts(tmp_path) -> None:
    import configparser

    from tests.interop.conf import COMPUTE_FEATURES, CloudFacts, tempest_conf

    facts = CloudFacts(base_url="http://127.0.0.1:9", image_ref="i1", image_ref_alt="i2", flavor_ref="42",
                       flavor_ref_alt="84", fixed_network_name="interop-net", public_network_id="pub",
                       network_extensions=["external-net", "router"], compute_max_microversion="2.47")
    conf = configparser.ConfigParser(interpolation=None, default_section="no-defaults")
    conf.read_string(tempest_conf(facts, tmp_path))
    # oslo.config has no inline comments: "False  # why" would not be a boolean.
    assert set(conf["compute-feature-enabled"].values()) == {"True", "False"}
    assert set(conf["compute-feature-enabled"]) == set(COMPUTE_FEATURES)
    assert conf["network-feature-enabled"]["ipv6"] == "True"
    assert conf["network-feature-enabled"]["api_extensions"] == "external-net,router"
    assert conf["compute"]["max_microversion"] == "2.47"
    assert conf["identity"]["uri_v3"] == "http://127.0.0.1:9/identity/v3"
    assert conf["auth"]["use_dynamic_credentials"] == "False"
