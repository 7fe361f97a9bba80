"""The memory balancer's mode per host, resolved from aggregate metadata (a pure function)."""

from __future__ import annotations

import pytest

from yunstack.compute.aggregates import BALANCER_MODES, check_balancer_mode, resolve_modes
from yunstack.errors import BadRequest


def test_a_host_in_no_aggregate_with_the_key_gets_the_default() -> None:
    assert resolve_modes({}, ["a", "b"], "advise") == {"a": "advise", "b": "advise"}


@pytest.mark.parametrize(("values", "mode"), [({"auto"}, "auto"), ({"auto", "advise"}, "advise"),
                                              ({"auto", "off"}, "off"), ({"advise", "off", "auto"}, "off")])
def test_the_most_conservative_of_a_hosts_values_wins(values: set[str], mode: str) -> None:
    assert resolve_modes({"a": values}, ["a"], "auto") == {"a": mode}


def test_hosts_only_in_aggregates_are_resolved_too_and_a_stray_value_counts_as_off() -> None:
    assert resolve_modes({"gone": {"auto"}, "odd": {"sometimes", "auto"}}, [], "advise") == {
        "gone": "auto", "odd": "off"}


def test_only_the_three_modes_are_accepted() -> None:
    assert BALANCER_MODES == ("off", "advise", "auto")
    for mode in BALANCER_MODES:
        assert check_balancer_mode(mode) == mode
    for bad in ("", "AUTO", "on", "aggressive"):
        with pytest.raises(BadRequest):
            check_balancer_mode(bad)
    with pytest.raises(BadRequest):
        resolve_modes({}, ["a"], "on")
