"""The metadata attack: a member of project B names project A's server on a port of B's own network.

Before the fix, the port was accepted and the metadata service, resolving (network, address) to
the port's ``device_id``, served A's user data, metadata and keys to B's guest; A's server view
also listed B's address.  Now the API refuses the port (409 DeviceIDNotOwnedByTenant, Neutron's
answer for a device id of another project), and independently of the API the lookup answers only
for a compute-bound port of the server's own project.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import update

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import boot, wait_for
from tests.functional.network.conftest import Net
from yunstack.db.tables import network as t
from yunstack.network.dataplane.metadata_api import (
    ADDRESS_HEADER,
    NETWORK_HEADER,
    SIGNATURE_HEADER,
    ensure_secret,
    sign,
)

# The server tests' fixtures: a host agent on the FakeDriver, two projects and an image.
world, host, qcow2 = servers.world, servers.host, servers.qcow2
SECRET_DATA = b"#cloud-config\npassword: alices-secret\n"


def neutron(world: dict[str, Any], who: str) -> Net:
    nova = world[who]
    return Net(nova.api, nova.token)


def metadata(world: dict[str, Any], network_id: str, address: str, path: str) -> Any:
    api = world["api"]
    secret = ensure_secret(api.services.config.server.state_path / "network" / "metadata_secret")
    return api.http.get(f"/metadata/{path}", headers={
        NETWORK_HEADER: network_id, ADDRESS_HEADER: address, SIGNATURE_HEADER: sign(secret, network_id, address)})


def victim(world: dict[str, Any]) -> dict[str, Any]:
    alice = neutron(world, "alice")
    net = alice.network("a-net")
    alice.subnet(net["id"], "10.90.0.0/24")
    server = boot(world, networks=[{"uuid": net["id"]}],
                  user_data=base64.b64encode(SECRET_DATA).decode(), metadata={"role": "db"})
    return {"server": server, "net": net}


def attacker_network(world: dict[str, Any]) -> tuple[Net, dict[str, Any]]:
    bob = neutron(world, "bob")
    net = bob.network("b-net")
    bob.subnet(net["id"], "10.91.0.0/24")
    return bob, net


def test_a_port_may_not_name_another_projects_server(world: dict[str, Any]) -> None:
    a = victim(world)
    sid = a["server"]["id"]
    bob, net = attacker_network(world)
    for attrs in ({"device_id": sid}, {"device_id": sid, "device_owner": "compute:nova"},
                  {"device_owner": "compute:nova"}):
        r = bob.post("/ports", {"port": {"network_id": net["id"], **attrs}})
        assert r.status_code == 409, r.text
        assert r.json()["NeutronError"]["type"] == "DeviceIDNotOwnedByTenant"
    port = bob.port(net["id"])
    r = bob.put(f"/ports/{port['id']}", {"port": {"device_id": sid, "device_owner": "compute:nova"}})
    assert r.status_code == 409, r.text
    assert bob.get(f"/ports/{port['id']}").json()["port"]["device_id"] == ""
    # The victim's server view shows only its own address.
    addresses = wait_for(world["alice"], sid, "ACTIVE")["addresses"]
    assert set(addresses) == {"a-net"}
    # A free-form device_id that names no server stays allowed (Neutron does not check those).
    assert bob.port(net["id"], device_id="my-appliance")["device_id"] == "my-appliance"


def test_a_port_may_name_a_server_of_its_own_project(world: dict[str, Any]) -> None:
    a = victim(world)
    alice = neutron(world, "alice")
    made = alice.port(a["net"]["id"], device_id=a["server"]["id"], device_owner="compute:nova")
    assert made["device_id"] == a["server"]["id"]


def test_the_metadata_lookup_serves_only_the_servers_own_compute_bound_port(world: dict[str, Any]) -> None:
    a = victim(world)
    sid = a["server"]["id"]
    own_ip = a["server"]["addresses"]["a-net"][0]["addr"]
    answer = metadata(world, a["net"]["id"], own_ip, "openstack/latest/user_data")
    assert answer.status_code == 200 and answer.content == SECRET_DATA  # the server itself is served
    bob, net = attacker_network(world)
    port = bob.port(net["id"])
    bob_ip = port["fixed_ips"][0]["ip_address"]
    services = world["api"].services
    # Forge what the API now refuses: B's port claims A's server, first merely, then even bound
    # to the host as compute would bind it.
    for forged in ({"device_id": sid, "device_owner": "compute:nova"},
                   {"device_id": sid, "device_owner": "compute:nova", "binding_host": services.config.host_name}):
        with services.db.begin() as s:
            s.execute(update(t.Port).where(t.Port.id == port["id"]).values(**forged))
        for path in ("openstack/latest/user_data", "openstack/latest/meta_data.json", "latest/meta-data/"):
            r = metadata(world, net["id"], bob_ip, path)
            assert r.status_code == 404, (forged, path, r.text)
    # Nor does the victim's server view pick up the forged port's address.
    assert set(wait_for(world["alice"], sid, "ACTIVE")["addresses"]) == {"a-net"}
