"""Access address checks and the linear-time ``ip``/``ip6`` filter reading."""

from __future__ import annotations

import time

import pytest

from yunstack.compute import addressing
from yunstack.errors import BadRequest


def test_ipv6_access_addresses_are_compressed_and_bad_ones_are_400() -> None:
    assert addressing.access_ipv6("2001:0DB8:0:0:0:0:0:1") == "2001:db8::1"
    assert addressing.access_ipv4("192.0.2.1") == "192.0.2.1"
    for bad in ("", "1.2.3", "1.2.3.4.5", "::1"):
        with pytest.raises(BadRequest):
            addressing.access_ipv4(bad)
    with pytest.raises(BadRequest):
        addressing.access_ipv6("10.0.0.1")


def test_the_ip_filter_reads_prefixes_anchors_and_escaped_dots() -> None:
    addresses = ["10.0.0.15", "192.168.1.2"]
    assert addressing.matches("10.0.0.1", "ip", addresses)  # a prefix, as re.match would
    assert not addressing.matches("10.0.0.1$", "ip", addresses)
    assert addressing.matches("^192\\.168\\.1\\.2$", "ip", addresses)
    assert not addressing.matches("0.0", "ip", addresses)  # match is anchored at the start
    assert addressing.matches("FE80::", "ip6", ["fe80::1"])


def test_a_catastrophic_regex_is_refused_at_once_not_run() -> None:
    started = time.monotonic()
    for pattern in ("(1+)+$", "[0-9]+", "a|b", ""):
        with pytest.raises(BadRequest):
            addressing.matches(pattern, "ip", ["1" * 40 + "x"])
    assert time.monotonic() - started < 0.1
