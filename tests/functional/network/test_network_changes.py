"""Which hosts a committed network change is told to (``network.changes``), on both databases.

Ports are bound to made-up hosts through the calls Nova makes; the feed's ``notify`` records what
each commit told.  Each check names the hosts that must hear of a change and one that must not.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Api
from tests.functional.network.test_network_service import ctx_of
from yunstack.db.tables import network as t
from yunstack.errors import BadRequest
from yunstack.network.changes import NetworkChanges
from yunstack.network.service import NetworkService


class Told:
    """The hosts the feed told since the last ``take``: once it has told all that was committed."""

    def __init__(self, changes: NetworkChanges) -> None:
        self.changes = changes
        self._calls: list[set[str]] = []

    def __call__(self, hosts: set[str]) -> None:
        self._calls.append(set(hosts))

    @property
    def calls(self) -> list[set[str]]:
        assert self.changes.settle(), "the change feed did not settle"
        return self._calls

    def take(self) -> set[str]:
        hosts = set().union(*self.calls)
        self._calls.clear()
        return hosts


@pytest.fixture
def feed(api: Api, world: dict[str, Any]) -> dict[str, Any]:
    svc: NetworkService = api.services.network
    told = Told(svc.changes)
    svc.changes.notify = told
    alice = world["alice"]
    net1, net2 = alice.network("one"), alice.network("two")
    alice.subnet(net1["id"], "10.61.0.0/24")
    alice.subnet(net2["id"], "10.62.0.0/24")
    web = alice.made("/security-groups", "security_group", name="web")
    ctx = ctx_of(api, alice)
    svc.allocate_for_instance(ctx, "vm-a", "host-a", [{"uuid": net1["id"]}], ["default"])
    told.take()
    return {"svc": svc, "ctx": ctx, "told": told, "net1": net1, "net2": net2, "web": web, "alice": alice,
            "nethost": svc.network_host}


def test_a_port_tells_its_networks_hosts_and_not_anothers(feed: dict[str, Any]) -> None:
    svc, ctx, told, nethost = feed["svc"], feed["ctx"], feed["told"], feed["nethost"]
    svc.allocate_for_instance(ctx, "vm-b", "host-b", [{"uuid": feed["net1"]["id"]}], ["web"])
    # host-a learns where host-b's MAC is (its VXLAN forwarding), the network host serves its DHCP.
    assert told.take() == {"host-a", "host-b", nethost}
    svc.allocate_for_instance(ctx, "vm-c", "host-c", [{"uuid": feed["net2"]["id"]}], ["web"])
    # host-b shares a group with it (web's members are in no rule of another group, so host-a is not told).
    assert told.take() == {"host-c", nethost}
    svc.deallocate_for_instance(ctx, "vm-b")
    assert told.take() == {"host-a", "host-b", nethost}  # its old host drops its tap


def test_a_rule_tells_the_hosts_of_its_group_and_of_the_groups_that_name_it(feed: dict[str, Any]) -> None:
    svc, ctx, told, nethost, alice = feed["svc"], feed["ctx"], feed["told"], feed["nethost"], feed["alice"]
    web = feed["web"]
    svc.allocate_for_instance(ctx, "vm-b", "host-b", [{"uuid": feed["net2"]["id"]}], ["web"])
    told.take()
    rule = alice.made("/security-group-rules", "security_group_rule", security_group_id=web["id"],
                      direction="ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    assert told.take() == {"host-b", nethost}
    (default,) = [g for g in alice.get("/security-groups").json()["security_groups"] if g["name"] == "default"]
    alice.made("/security-group-rules", "security_group_rule", security_group_id=default["id"],
               direction="ingress", protocol="udp", remote_group_id=web["id"])
    assert told.take() == {"host-a", nethost}
    # web gains a member: host-a's rule that names web must let it in.
    svc.allocate_for_instance(ctx, "vm-c", "host-c", [{"uuid": feed["net2"]["id"]}], ["web"])
    assert told.take() == {"host-a", "host-b", "host-c", nethost}
    assert alice.delete(f"/security-group-rules/{rule['id']}").status_code == 204
    assert told.take() == {"host-b", "host-c", nethost}


def test_a_port_that_leaves_a_group_tells_the_hosts_whose_rules_name_it(feed: dict[str, Any]) -> None:
    svc, ctx, told, nethost, alice = feed["svc"], feed["ctx"], feed["told"], feed["nethost"], feed["alice"]
    web = feed["web"]
    (port,) = svc.allocate_for_instance(ctx, "vm-b", "host-b", [{"uuid": feed["net2"]["id"]}], ["web"])
    (default,) = [g for g in alice.get("/security-groups").json()["security_groups"] if g["name"] == "default"]
    alice.made("/security-group-rules", "security_group_rule", security_group_id=default["id"],
               direction="ingress", protocol="udp", remote_group_id=web["id"])
    told.take()
    r = alice.put(f"/ports/{port.id}", {"port": {"security_groups": [default["id"]]}})
    assert r.status_code == 200, r.text
    # host-a's rule named web, which host-b's port has left.
    assert told.take() == {"host-a", "host-b", nethost}


def test_a_change_that_is_rolled_back_tells_no_one(feed: dict[str, Any]) -> None:
    svc, ctx, told = feed["svc"], feed["ctx"], feed["told"]
    with pytest.raises(BadRequest):
        svc.allocate_for_instance(ctx, "vm-x", "host-x", [{"uuid": feed["net1"]["id"]}], ["nosuch"])
    with pytest.raises(BadRequest):
        # The second NIC's network does not exist: the first port was written, then rolled back.
        svc.allocate_for_instance(ctx, "vm-x", "host-x", [{"uuid": feed["net1"]["id"]}, {"uuid": "nope"}], [])
    assert told.calls == []


def test_a_router_or_a_tunnel_address_tells_who_it_concerns(feed: dict[str, Any]) -> None:
    svc, told, nethost, alice = feed["svc"], feed["told"], feed["nethost"], feed["alice"]
    alice.made("/routers", "router", name="r1")
    assert told.take() == {nethost}
    svc.report_tunnel("host-a", "192.0.2.10")
    assert told.take() == {"host-a", nethost}  # no other host shares a network with host-a yet
    svc.report_tunnel("host-a", "192.0.2.10")  # unchanged: not written, no one told
    assert told.calls == []
    svc.allocate_for_instance(feed["ctx"], "vm-b", "host-b", [{"uuid": feed["net2"]["id"]}], ["web"])
    told.take()
    svc.report_tunnel(nethost, "192.0.2.1")  # the network host is every network's VXLAN peer
    assert told.take() == {"host-a", "host-b", nethost}



def test_a_write_that_changes_nothing_tells_no_one(api: Api, feed: dict[str, Any]) -> None:
    told = feed["told"]
    with api.services.db.begin() as s:
        port = s.scalars(select(t.Port).where(t.Port.device_id == "vm-a")).one()
        port.status, port.binding_host = port.status, port.binding_host  # set, to the values it has
        assert port in s.dirty
    assert told.calls == []
    with api.services.db.begin() as s:
        s.scalars(select(t.Port).where(t.Port.device_id == "vm-a")).one().binding_host = "host-z"
    assert told.take() == {"host-a", "host-z", feed["nethost"]}  # it left host-a for host-z
