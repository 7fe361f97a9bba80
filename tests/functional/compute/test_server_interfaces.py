"""os-interface and a server's security groups, through the API with the real agent on the FakeDriver."""

from __future__ import annotations

from typing import Any

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import action, boot, until, wait_for
from tests.functional.network.conftest import Net
from yunstack.network.dataplane.fake import FakeDataplane

# The server tests' fixtures: a host agent on the FakeDriver, two projects and an image.
world, host, qcow2 = servers.world, servers.host, servers.qcow2


def net_of(world: dict[str, Any], token_of: str = "alice") -> Net:
    nova = world[token_of]
    return Net(nova.api, nova.token)


def network(world: dict[str, Any], name: str, cidr: str) -> dict[str, Any]:
    neutron = net_of(world)
    made = neutron.network(name)
    neutron.subnet(made["id"], cidr)
    return made


def guest_macs(world: dict[str, Any], server_id: str) -> list[str]:
    return [n.mac for n in world["host"].driver._guests[server_id].spec.nics]


def dataplane_ports(world: dict[str, Any]) -> set[str]:
    agent = world["host"].agent
    assert agent is not None and isinstance(agent.dataplane, FakeDataplane)
    state = agent.dataplane.state
    return {p.id for p in state.ports} if state else set()


def test_attach_list_show_and_detach_an_interface_with_novas_shapes(world: dict[str, Any]) -> None:
    nova = world["alice"]
    first = network(world, "n1", "10.11.0.0/24")
    second = network(world, "n2", "10.12.0.0/24")
    server = boot(world, networks=[{"uuid": first["id"]}])
    sid = server["id"]
    listed = nova.get(f"/servers/{sid}/os-interface").json()["interfaceAttachments"]
    assert len(listed) == 1 and listed[0]["net_id"] == first["id"]
    assert set(listed[0]) == {"port_state", "fixed_ips", "port_id", "net_id", "mac_addr"}

    r = nova.post(f"/servers/{sid}/os-interface", {"interfaceAttachment": {"net_id": second["id"]}})
    assert r.status_code == 200, r.text
    att = r.json()["interfaceAttachment"]
    assert att["net_id"] == second["id"] and att["port_state"] == "ACTIVE"
    assert att["fixed_ips"][0]["ip_address"].startswith("10.12.0.")
    assert set(att["fixed_ips"][0]) == {"subnet_id", "ip_address"}
    until(lambda: att["mac_addr"] in guest_macs(world, sid))  # hot-plugged by the agent
    assert att["port_id"] in dataplane_ports(world)
    shown = nova.get(f"/servers/{sid}/os-interface/{att['port_id']}").json()["interfaceAttachment"]
    assert shown == att
    addresses = wait_for(nova, sid, "ACTIVE")["addresses"]
    assert set(addresses) == {"n1", "n2"}

    assert nova.delete(f"/servers/{sid}/os-interface/{att['port_id']}").status_code == 202
    until(lambda: att["mac_addr"] not in guest_macs(world, sid))
    until(lambda: nova.get(f"/servers/{sid}/os-interface/{att['port_id']}").status_code == 404)
    until(lambda: att["port_id"] not in dataplane_ports(world))
    # Nova made that port, so it is gone, not just detached.
    assert net_of(world).get(f"/ports/{att['port_id']}").status_code == 404
    events = {a["action"] for a in nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]}
    assert {"attach_interface", "detach_interface"} <= events


def test_attaching_a_users_port_takes_it_over_and_detaching_gives_it_back(world: dict[str, Any]) -> None:
    nova = world["alice"]
    net = network(world, "n1", "10.13.0.0/24")
    port = net_of(world).port(net["id"], name="mine")
    sid = boot(world, networks="none")["id"]
    r = nova.post(f"/servers/{sid}/os-interface", {"interfaceAttachment": {"port_id": port["id"]}})
    assert r.status_code == 200, r.text
    until(lambda: port["mac_address"] in guest_macs(world, sid))
    # The guest has the NIC before its host's report ends the attach; a detach waits for that (409).
    wait_for(nova, sid, "ACTIVE")
    assert net_of(world).get(f"/ports/{port['id']}").json()["port"]["device_id"] == sid
    assert nova.delete(f"/servers/{sid}/os-interface/{port['id']}").status_code == 202
    until(lambda: net_of(world).get(f"/ports/{port['id']}").json()["port"]["device_id"] == "")
    assert guest_macs(world, sid) == []


def test_a_stopped_server_gets_the_port_now_and_the_nic_at_its_next_start(world: dict[str, Any]) -> None:
    nova = world["alice"]
    net = network(world, "n1", "10.14.0.0/24")
    sid = boot(world, networks="none")["id"]
    assert action(nova, sid, {"os-stop": None}).status_code == 202
    wait_for(nova, sid, "SHUTOFF")
    r = nova.post(f"/servers/{sid}/os-interface", {"interfaceAttachment": {"net_id": net["id"]}})
    assert r.status_code == 200, r.text
    mac = r.json()["interfaceAttachment"]["mac_addr"]
    until(lambda: nova.get(f"/servers/{sid}").json()["server"]["addresses"] != {})
    assert wait_for(nova, sid, "SHUTOFF")["OS-EXT-STS:power_state"] == 4
    assert action(nova, sid, {"os-start": None}).status_code == 202
    wait_for(nova, sid, "ACTIVE")
    assert guest_macs(world, sid) == [mac]


def test_interface_errors_are_novas(world: dict[str, Any]) -> None:
    nova, bob = world["alice"], world["bob"]
    net = network(world, "n1", "10.15.0.0/24")
    sid = boot(world, networks="none")["id"]
    base = f"/servers/{sid}/os-interface"
    assert nova.post(base, {"interfaceAttachment": {"net_id": net["id"], "bogus": 1}}).status_code == 400
    assert nova.post(base, {"interfaceAttachment": {"net_id": net["id"], "port_id": "x"}}).status_code == 400
    assert nova.post(base, {"interfaceAttachment": {"net_id": "no-such-net"}}).status_code == 400
    assert nova.get(f"{base}/no-such-port").status_code == 404
    assert nova.delete(f"{base}/no-such-port").status_code == 404
    assert bob.get(base).status_code == 404
    assert bob.post(base, {"interfaceAttachment": {"net_id": net["id"]}}).status_code == 404
    assert world["rita"].post(base, {"interfaceAttachment": {"net_id": net["id"]}}).status_code == 403
    assert action(nova, sid, {"pause": None}).status_code == 202
    wait_for(nova, sid, "PAUSED")
    r = nova.post(base, {"interfaceAttachment": {"net_id": net["id"]}})
    assert r.status_code == 409 and "vm_state paused" in r.json()["conflictingRequest"]["message"]
    assert net_of(world).get("/ports", network_id=net["id"]).json()["ports"][1:] == []  # only DHCP's


def test_add_and_remove_a_security_group_changes_every_port_and_the_server(world: dict[str, Any]) -> None:
    nova, neutron = world["alice"], net_of(world)
    net = network(world, "n1", "10.16.0.0/24")
    web = neutron.made("/security-groups", "security_group", name="web")
    sid = boot(world, networks=[{"uuid": net["id"]}])["id"]

    def port_groups() -> list[str]:
        ports = neutron.get("/ports", device_id=sid).json()["ports"]
        return [g for p in ports for g in p["security_groups"]]

    default = port_groups()
    assert len(default) == 1
    assert action(nova, sid, {"addSecurityGroup": {"name": "web"}}).status_code == 202
    assert sorted(port_groups()) == sorted([*default, web["id"]])
    server = nova.get(f"/servers/{sid}").json()["server"]
    assert server["security_groups"] == [{"name": "default"}, {"name": "web"}]
    groups = nova.get(f"/servers/{sid}/os-security-groups").json()["security_groups"]
    assert sorted(g["name"] for g in groups) == ["default", "web"]
    assert all({"id", "name", "description", "tenant_id", "rules"} <= set(g) for g in groups)
    r = action(nova, sid, {"addSecurityGroup": {"name": "web"}})
    assert r.status_code == 400 and "already associated" in r.json()["badRequest"]["message"]

    assert action(nova, sid, {"removeSecurityGroup": {"name": "web"}}).status_code == 202
    assert port_groups() == default
    assert nova.get(f"/servers/{sid}").json()["server"]["security_groups"] == [{"name": "default"}]
    r = action(nova, sid, {"removeSecurityGroup": {"name": "web"}})
    assert r.status_code == 400 and "not associated" in r.json()["badRequest"]["message"]
    assert action(nova, sid, {"addSecurityGroup": {"name": "nope"}}).status_code == 404
    assert action(nova, sid, {"addSecurityGroup": {}}).status_code == 400
    assert action(world["bob"], sid, {"addSecurityGroup": {"name": "web"}}).status_code == 404



def dataplane_rules(world: dict[str, Any]) -> set[str]:
    agent = world["host"].agent
    assert agent is not None and isinstance(agent.dataplane, FakeDataplane)
    state = agent.dataplane.state
    return {r.id for g in state.security_groups for r in g.rules} if state else set()


def test_a_rule_reaches_the_hosts_dataplane_at_once_not_at_its_period(world: dict[str, Any]) -> None:
    """The control plane tells the host (its long-poll answers ``network``) and its agent reconciles then.

    The agent's period is made an hour: once a pass has ended after that, only the notice can
    bring the second rule.
    """
    neutron = net_of(world)
    net = network(world, "n1", "10.17.0.0/24")
    boot(world, networks=[{"uuid": net["id"]}])
    agent = world["host"].agent
    assert agent is not None and agent.network is not None
    agent.network.period = 3600.0
    (default,) = [g for g in neutron.get("/security-groups").json()["security_groups"] if g["name"] == "default"]

    def rule(port: int) -> str:
        made = neutron.made("/security-group-rules", "security_group_rule", security_group_id=default["id"],
                            direction="ingress", protocol="tcp", port_range_min=port, port_range_max=port)
        return str(made["id"])

    first = rule(22)
    until(lambda: first in dataplane_rules(world))  # this pass ended after the period became an hour
    second = rule(80)
    until(lambda: second in dataplane_rules(world))
    assert neutron.delete(f"/security-group-rules/{first}").status_code == 204
    until(lambda: first not in dataplane_rules(world))
