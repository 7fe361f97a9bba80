"""A router namespace's extra routes: which are applied, and the commands that converge them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from yunstack.network.dataplane import _cmd, routers
from yunstack.network.desired import RouterInterface, RouterState


def router(*routes: tuple[str, str]) -> RouterState:
    iface = RouterInterface(port_id="p1", subnet_id="s1", network_id="n1", ip_address="10.0.0.1", prefixlen=24,
                            mac_address="fa:16:3e:00:00:01")
    return RouterState(id="r1", gateway_network_id="ext", gateway_ip="172.24.4.10", gateway_prefixlen=24,
                       gateway_mac="fa:16:3e:00:00:02", enable_snat=True, interfaces=(iface,), routes=routes)


def test_only_routes_whose_nexthop_is_on_a_connected_subnet_are_applied() -> None:
    r = router(("192.168.1.0/24", "10.0.0.9"), ("192.168.2.0/24", "172.24.4.99"), ("192.168.3.0/24", "10.9.9.9"))
    assert routers.connected_routes(r) == [("192.168.1.0/24", "10.0.0.9"), ("192.168.2.0/24", "172.24.4.99")]


def test_sync_adds_missing_static_routes_and_removes_stale_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    present = {"-4": [{"dst": "192.168.9.0/24", "gateway": "10.0.0.5"}, {"dst": "192.168.1.0/24",
                                                                          "gateway": "10.0.0.9"}], "-6": []}

    def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
        assert netns == "ns" and args[1:] == ("route", "show", "proto", "static")
        return present[args[0]]

    def run(argv: Sequence[str], *, netns: str | None = None, check: bool = True, **_: Any) -> str:
        assert netns == "ns"
        ran.append(list(argv))
        return ""

    monkeypatch.setattr(_cmd, "ip_json", ip_json)
    monkeypatch.setattr(_cmd, "run", run)
    r = router(("192.168.1.0/24", "10.0.0.9"), ("192.168.2.0/24", "10.0.0.7"))
    assert routers.sync_routes(r, "ns") is True
    assert ran == [["ip", "route", "del", "192.168.9.0/24", "via", "10.0.0.5", "proto", "static"],
                   ["ip", "route", "replace", "192.168.2.0/24", "via", "10.0.0.7", "proto", "static"]]
    ran.clear()
    present["-4"] = [{"dst": "192.168.1.0/24", "gateway": "10.0.0.9"}, {"dst": "192.168.2.0/24",
                                                                         "gateway": "10.0.0.7"}]
    assert routers.sync_routes(r, "ns") is False and ran == []
