"""The compute images proxy (up to 2.35), ``PUT /servers/{id}`` shapes, access addresses and ip filters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_server_interfaces import net_of, network
from tests.functional.compute.test_servers import action, body, boot, wait_for

world, host, qcow2 = servers.world, servers.host, servers.qcow2
IMAGE_KEYS = {"id", "name", "minRam", "minDisk", "metadata", "created", "updated", "status", "progress",
              "OS-EXT-IMG-SIZE:size", "links"}


# -- images --------------------------------------------------------------------------------------

def test_images_list_detail_and_show_have_novas_shape_until_2_35_and_are_404_after(world: dict[str, Any]) -> None:
    alice, image = world["alice"], world["image"]
    listed = alice.get("/images").json()["images"]
    assert [set(i) for i in listed] == [{"id", "name", "links"}]
    assert [link["rel"] for link in listed[0]["links"]] == ["self", "bookmark", "alternate"]
    shown = alice.at("2.35").get(f"/images/{image}").json()["image"]
    assert set(shown) == IMAGE_KEYS
    assert (shown["status"], shown["progress"], shown["name"]) == ("ACTIVE", 100, "cirros")
    assert alice.get("/images/detail").json()["images"] == [shown]
    for path in ("/images", "/images/detail", f"/images/{image}", f"/images/{image}/metadata"):
        r = alice.at("2.36").get(path)
        assert r.status_code == 404, path
    assert alice.get("/images/00000000-0000-0000-0000-000000000000").status_code == 404
    assert alice.get("/images", name="nope").json() == {"images": []}


def test_a_snapshot_reads_through_the_proxy_with_its_server_link(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    r = action(nova, sid, {"createImage": {"name": "snap", "metadata": {"purpose": "test"}}})
    assert r.status_code == 202, r.text
    image_id = r.headers["location"].rsplit("/", 1)[1]
    wait_for(nova, sid, "ACTIVE")
    image = nova.get(f"/images/{image_id}").json()["image"]
    assert image["status"] in ("SAVING", "ACTIVE")
    assert image["server"]["id"] == sid
    assert image["server"]["links"][0]["href"].endswith(f"/compute/v2.1/servers/{sid}")
    assert image["metadata"]["purpose"] == "test" and image["metadata"]["image_type"] == "snapshot"
    assert image["minRam"] > 0
    assert [i["id"] for i in nova.get("/images", server=sid).json()["images"]] == [image_id]
    assert [i["id"] for i in nova.get("/images", type="snapshot").json()["images"]] == [image_id]
    assert nova.delete(f"/images/{image_id}").status_code == 204
    assert nova.get(f"/images/{image_id}").status_code == 404


def test_image_metadata_reads_and_writes_the_images_properties(world: dict[str, Any]) -> None:
    nova = world["admin"]
    path = f"/images/{world['image']}/metadata"
    assert nova.get(path).json() == {"metadata": {}}
    assert nova.post(path, {"metadata": {"a": "1", "b": "2"}}).json() == {"metadata": {"a": "1", "b": "2"}}
    assert nova.put(path, {"metadata": {"b": "3"}}).json() == {"metadata": {"b": "3"}}
    assert nova.get(path).json() == {"metadata": {"b": "3"}}
    assert nova.get(path + "/b").json() == {"meta": {"b": "3"}}
    assert nova.put(path + "/c", {"meta": {"c": "4"}}).json() == {"meta": {"c": "4"}}
    assert nova.put(path + "/c", {"meta": {"d": "4"}}).status_code == 400
    assert nova.delete(path + "/c").status_code == 204
    assert nova.get(path + "/c").status_code == 404
    assert world["bob"].post(path, {"metadata": {"x": "1"}}).status_code in (403, 404)


# -- PUT /servers/{id} -------------------------------------------------------------------------

UPDATE_21 = {"id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image", "flavor", "created",
             "updated", "addresses", "accessIPv4", "accessIPv6", "links", "OS-DCF:diskConfig", "progress"}


@pytest.mark.parametrize(("version", "extra"), [("2.1", set()), ("2.9", {"locked"}),
                                                ("2.19", {"locked", "description"}),
                                                ("2.47", {"locked", "description", "tags"})])
def test_update_answers_novas_reduced_server_view(world: dict[str, Any], version: str, extra: set[str]) -> None:
    sid = boot(world)["id"]
    for who in ("alice", "admin"):
        r = world[who].at(version).put(f"/servers/{sid}", {"server": {"name": "renamed"}})
        assert r.status_code == 200, r.text
        assert set(r.json()["server"]) == UPDATE_21 | extra
        assert r.json()["server"]["name"] == "renamed"
    if version == "2.47":
        assert set(r.json()["server"]["flavor"]) >= {"vcpus", "ram", "original_name"}


def test_access_addresses_are_validated_and_ipv6_is_compressed_on_create_and_update(world: dict[str, Any]) -> None:
    nova = world["alice"]
    for bad in ({"accessIPv4": "1.2.3"}, {"accessIPv4": "::1"}, {"accessIPv6": "1.2.3.4"}, {"accessIPv6": "zz::"},
                {"accessIPv4": ""}):
        r = nova.post("/servers", body(world, **bad))
        assert r.status_code == 400, (bad, r.text)
    assert servers.instance_count(world["api"].services) == 0
    r = nova.post("/servers", body(world, accessIPv4="192.0.2.7", accessIPv6="2001:0db8:0000:0000:0000:0000:0000:0001"))
    sid = r.json()["server"]["id"]
    shown = wait_for(nova, sid, "ACTIVE")
    assert (shown["accessIPv4"], shown["accessIPv6"]) == ("192.0.2.7", "2001:db8::1")
    r = nova.put(f"/servers/{sid}", {"server": {"accessIPv6": "FE80:0:0:0:0:0:0:0A"}})
    assert r.json()["server"]["accessIPv6"] == "fe80::a"
    assert nova.put(f"/servers/{sid}", {"server": {"accessIPv4": "300.1.1.1"}}).status_code == 400
    assert nova.get(f"/servers/{sid}").json()["server"]["accessIPv6"] == "fe80::a"


# -- ip / ip6 filters ----------------------------------------------------------------------------

def test_the_ip_filter_matches_fixed_addresses_by_prefix_and_refuses_regex_syntax(world: dict[str, Any]) -> None:
    nova = world["alice"]
    net = network(world, "n1", "10.31.0.0/24")
    sid = boot(world, networks=[{"uuid": net["id"]}])["id"]
    boot(world, name="other")
    address = nova.get(f"/servers/{sid}").json()["server"]["addresses"]["n1"][0]["addr"]
    for pattern in ("10.31.", "^10\\.31\\.0", f"{address}$", address):
        assert [s["id"] for s in nova.get("/servers", ip=pattern).json()["servers"]] == [sid], pattern
    assert nova.get("/servers", ip="10.32").json()["servers"] == []
    assert nova.get("/servers", ip6="fe80").json()["servers"] == []
    r = nova.get("/servers/detail", ip="(1+)+$")
    assert r.status_code == 400 and "ip filter" in r.json()["badRequest"]["message"]


def test_a_server_booted_with_a_group_id_shows_the_groups_name(world: dict[str, Any]) -> None:
    net = network(world, "n1", "10.33.0.0/24")
    web = net_of(world).made("/security-groups", "security_group", name="web")
    r = world["alice"].post("/servers", body(world, networks=[{"uuid": net["id"]}],
                                             security_groups=[{"name": web["id"]}]))
    assert r.status_code == 202, r.text
    assert r.json()["server"]["security_groups"] == [{"name": "web"}]
    assert wait_for(world["alice"], r.json()["server"]["id"], "ACTIVE")["security_groups"] == [{"name": "web"}]
