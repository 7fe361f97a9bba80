"""Nova flavors, keypairs, quotas, limits, hypervisors and zones through the in-process API."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.conftest import Api
from yunstack.compute.driver import HostInfo
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, QuotaExceeded
from yunstack.types import new_uuid, utcnow

C = "/compute/v2.1"
ID = "/identity/v3"
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICwnWVDVSjyFSo5mCdbm7/xXTEv+Rr2r2Bo/oztwYf6d test@yun")


def md5_fingerprint(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def make_member(api: Api, admin: str, project: str, user: str, role: str = "member") -> dict[str, str]:
    h = api.headers(admin)
    r = api.http.post(f"{ID}/projects", json={"project": {"name": project}}, headers=h)
    pid = r.json()["project"]["id"] if r.status_code == 201 else \
        api.http.get(f"{ID}/projects", params={"name": project}, headers=h).json()["projects"][0]["id"]
    r = api.http.post(f"{ID}/users", json={"user": {"name": user, "password": f"{user}-pw",
                                                     "default_project_id": pid}}, headers=h)
    uid = r.json()["user"]["id"]
    rid = api.http.get(f"{ID}/roles", params={"name": role}, headers=h).json()["roles"][0]["id"]
    assert api.http.put(f"{ID}/projects/{pid}/users/{uid}/roles/{rid}", headers=h).status_code == 204
    return {"project_id": pid, "user_id": uid}


class Nova:
    """Calls with a token and a microversion."""

    def __init__(self, api: Api, token: str, version: str | None = None) -> None:
        self.api, self.token, self.version = api, token, version

    def at(self, version: str | None) -> Nova:
        return Nova(self.api, self.token, version)

    def _h(self) -> dict[str, str]:
        h = {"X-Auth-Token": self.token}
        if self.version:
            h["OpenStack-API-Version"] = f"compute {self.version}"
        return h

    def get(self, path: str, **params: Any) -> Any:
        return self.api.http.get(C + path, params=params, headers=self._h())

    def post(self, path: str, body: Any) -> Any:
        return self.api.http.post(C + path, json=body, headers=self._h())

    def put(self, path: str, body: Any) -> Any:
        return self.api.http.put(C + path, json=body, headers=self._h())

    def delete(self, path: str) -> Any:
        return self.api.http.delete(C + path, headers=self._h())


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    api.services.flavors.ensure_defaults()
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    return {"a": a, "b": b, "admin": Nova(api, admin),
            "alice": Nova(api, api.login("alice", "alice-pw", "alpha")),
            "bob": Nova(api, api.login("bob", "bob-pw", "beta"))}


def host_info(name: str = "node1") -> HostInfo:
    return HostInfo(hostname=name, vcpus=8, memory_mib=16384, memory_used_mib=2048, local_gb=100,
                    local_gb_used=10, hypervisor_type="QEMU", hypervisor_version=8002000,
                    cpu_info=json.dumps({"arch": "x86_64", "model": "host"}), uptime=" 10:00:00 up 1 day",
                    accel="kvm")


def heartbeat(api: Api, name: str = "node1", az: str = "nova") -> str:
    return api.services.hosts.heartbeat(name, host_info(name), availability_zone=az, ram_allocation_ratio=1.5,
                                        cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0,
                                        reserved_host_memory_mib=512, host_ip="10.0.0.5")


def add_instance(api: Api, project_id: str, user_id: str, *, host: str | None, vcpus: int, ram: int,
                 disk: int = 1, vm_state: str = "active") -> None:
    now = utcnow()
    with api.services.db.begin() as s:
        s.add(t.Instance(id=new_uuid(), name="vm", hostname="vm", project_id=project_id, user_id=user_id,
                         host=host, availability_zone="nova", vm_state=vm_state, power_state=1,
                         flavor={"id": "x", "name": "x", "vcpus": vcpus, "ram": ram, "disk": disk,
                                 "ephemeral": 0, "swap": 0, "extra_specs": {}},
                         created_at=now, updated_at=now))


# -- versions and microversions -----------------------------------------------------------------

def test_version_documents_list_v2_0_first_and_advertise_2_47(api: Api) -> None:
    versions = api.http.get("/compute/").json()["versions"]
    assert [v["id"] for v in versions] == ["v2.0", "v2.1"]
    v21 = api.http.get(C).json()["version"]
    assert v21["version"] == "2.47" and v21["min_version"] == "2.1"


def test_latest_is_echoed_as_2_47_and_bad_versions_are_refused(world: dict[str, Any]) -> None:
    r = world["alice"].at("latest").get("/flavors")
    assert r.status_code == 200
    assert r.headers["openstack-api-version"] == "compute 2.47"
    assert r.headers["x-openstack-nova-api-version"] == "2.47"
    assert "OpenStack-API-Version" in r.headers.get_list("vary")
    assert world["alice"].get("/flavors").headers["openstack-api-version"] == "compute 2.1"
    r = world["alice"].at("2.99").get("/flavors")
    assert r.status_code == 406 and "notAcceptable" not in r.text
    r = world["alice"].at("two").get("/flavors")
    assert r.status_code == 400 and r.json()["badRequest"]["code"] == 400


# -- flavors ------------------------------------------------------------------------------------

def test_bootstrap_flavors_are_listed_with_nova_shapes(world: dict[str, Any]) -> None:
    r = world["alice"].get("/flavors/detail", is_public="None")
    assert r.status_code == 200
    flavors = {f["name"]: f for f in r.json()["flavors"]}
    assert set(flavors) == {"m1.nano", "m1.micro", "m1.tiny", "m1.small", "m1.medium"}
    nano = flavors["m1.nano"]
    assert nano == {"id": "42", "name": "m1.nano", "ram": 128, "disk": 1, "vcpus": 1, "links": nano["links"],
                    "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False,
                    "os-flavor-access:is_public": True, "swap": "", "rxtx_factor": 1.0}
    assert nano["links"][0] == {"rel": "self", "href": "http://127.0.0.1:8080/compute/v2.1/flavors/42"}
    brief = world["alice"].get("/flavors").json()["flavors"][0]
    assert set(brief) == {"id", "name", "links"}
    assert world["admin"].get("/flavors/detail", is_public="maybe").status_code == 400


def test_flavor_filters_sorting_and_paging(world: dict[str, Any]) -> None:
    nova = world["alice"]
    names = [f["name"] for f in nova.get("/flavors/detail", minRam="2048").json()["flavors"]]
    assert sorted(names) == ["m1.medium", "m1.small"]
    ordered = [f["name"] for f in nova.get("/flavors", sort_key="memory_mb", sort_dir="desc").json()["flavors"]]
    assert ordered[0] == "m1.medium" and ordered[-1] == "m1.nano"
    page = nova.get("/flavors", sort_key="memory_mb", limit="2").json()
    assert [f["name"] for f in page["flavors"]] == ["m1.nano", "m1.micro"]
    assert "marker=84" in page["flavors_links"][0]["href"]
    rest = nova.get("/flavors", sort_key="memory_mb", limit="2", marker="84").json()
    assert [f["name"] for f in rest["flavors"]] == ["m1.tiny", "m1.small"]
    assert nova.get("/flavors", marker="nope").status_code == 400
    assert nova.get("/flavors", sort_key="bogus").status_code == 400


def test_admin_creates_shows_and_deletes_a_flavor(world: dict[str, Any]) -> None:
    admin = world["admin"]
    body = {"flavor": {"name": "f1", "ram": 256, "vcpus": 1, "disk": 1, "swap": 0,
                       "OS-FLV-EXT-DATA:ephemeral": 0, "os-flavor-access:is_public": True, "id": None}}
    r = admin.post("/flavors", body)
    assert r.status_code == 200, r.text
    made = r.json()["flavor"]
    assert len(made["id"]) == 36 and made["ram"] == 256
    assert admin.post("/flavors", body).status_code == 409
    dup_id = {"flavor": {"name": "f2", "ram": 256, "vcpus": 1, "disk": 1, "id": made["id"]}}
    assert admin.post("/flavors", dup_id).status_code == 409
    with_id = admin.post("/flavors", {"flavor": {"name": "f3", "ram": "64", "vcpus": 1, "disk": 0, "id": 77}})
    assert with_id.status_code == 200 and with_id.json()["flavor"]["id"] == "77"
    assert world["alice"].get(f"/flavors/{made['id']}").json()["flavor"]["name"] == "f1"
    assert admin.post("/flavors", {"flavor": {"name": "x", "ram": 1, "vcpus": 1, "disk": 1,
                                              "description": "2.55+"}}).status_code == 400
    assert admin.post("/flavors", {"flavor": {"name": "x", "ram": 0, "vcpus": 1, "disk": 1}}).status_code == 400
    assert world["alice"].post("/flavors", {"flavor": {"name": "x", "ram": 1, "vcpus": 1,
                                                       "disk": 1}}).status_code == 403
    assert world["alice"].delete(f"/flavors/{made['id']}").status_code == 403
    assert admin.delete(f"/flavors/{made['id']}").status_code == 202
    r = admin.get(f"/flavors/{made['id']}")
    assert r.status_code == 404 and "itemNotFound" in r.json()


def test_extra_specs_are_read_by_all_and_changed_by_admins(world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    r = admin.post("/flavors/1/os-extra_specs", {"extra_specs": {"hw:cpu_policy": "shared", "a": 1}})
    assert r.status_code == 200 and r.json() == {"extra_specs": {"hw:cpu_policy": "shared", "a": "1"}}
    assert alice.get("/flavors/1/os-extra_specs").json() == {"extra_specs": {"hw:cpu_policy": "shared", "a": "1"}}
    assert alice.get("/flavors/1/os-extra_specs/a").json() == {"a": "1"}
    assert alice.get("/flavors/1/os-extra_specs/zz").status_code == 404
    assert admin.put("/flavors/1/os-extra_specs/a", {"a": "b"}).json() == {"a": "b"}
    assert admin.put("/flavors/1/os-extra_specs/a", {"b": "c"}).status_code == 400
    assert admin.put("/flavors/1/os-extra_specs/a", {"a": "b", "c": "d"}).status_code == 400
    assert admin.post("/flavors/1/os-extra_specs", {"extra_specs": {"bad/key": "x"}}).status_code == 400
    assert admin.post("/flavors/1/os-extra_specs", {"extra_specs": {"k": "x" * 256}}).status_code == 400
    assert alice.post("/flavors/1/os-extra_specs", {"extra_specs": {"k": "v"}}).status_code == 403
    assert alice.delete("/flavors/1/os-extra_specs/a").status_code == 403
    assert admin.delete("/flavors/1/os-extra_specs/a").status_code == 200
    assert admin.delete("/flavors/1/os-extra_specs/a").status_code == 404
    assert admin.get("/flavors/detail").json()["flavors"][0].get("extra_specs") is None


def test_private_flavors_are_404_to_other_projects_until_access_is_given(world: dict[str, Any]) -> None:
    admin, alice, bob = world["admin"], world["alice"], world["bob"]
    made = admin.post("/flavors", {"flavor": {"name": "secret", "ram": 64, "vcpus": 1, "disk": 0,
                                              "os-flavor-access:is_public": False}}).json()["flavor"]
    fid = made["id"]
    assert alice.get(f"/flavors/{fid}").status_code == 404
    assert "secret" not in [f["name"] for f in alice.get("/flavors/detail", is_public="None").json()["flavors"]]
    assert "secret" not in [f["name"] for f in admin.get("/flavors").json()["flavors"]]
    assert "secret" in [f["name"] for f in admin.get("/flavors", is_public="None").json()["flavors"]]
    assert [f["name"] for f in admin.get("/flavors", is_public="false").json()["flavors"]] == ["secret"]
    pa = world["a"]["project_id"]
    r = admin.post(f"/flavors/{fid}/action", {"addTenantAccess": {"tenant": pa}})
    assert r.status_code == 200 and r.json() == {"flavor_access": [{"flavor_id": fid, "tenant_id": pa}]}
    assert admin.post(f"/flavors/{fid}/action", {"addTenantAccess": {"tenant": pa}}).status_code == 409
    assert alice.get(f"/flavors/{fid}").status_code == 200
    assert "secret" in [f["name"] for f in alice.get("/flavors").json()["flavors"]]
    assert bob.get(f"/flavors/{fid}").status_code == 404
    assert admin.get(f"/flavors/{fid}/os-flavor-access").json()["flavor_access"][0]["tenant_id"] == pa
    assert alice.get(f"/flavors/{fid}/os-flavor-access").status_code == 403
    assert alice.post(f"/flavors/{fid}/action", {"addTenantAccess": {"tenant": "x"}}).status_code == 403
    assert admin.get("/flavors/1/os-flavor-access").status_code == 404
    assert admin.post("/flavors/1/action", {"addTenantAccess": {"tenant": pa}}).status_code == 409
    assert admin.post(f"/flavors/{fid}/action", {"bogus": {}}).status_code == 400
    r = admin.post(f"/flavors/{fid}/action", {"removeTenantAccess": {"tenant": pa}})
    assert r.json() == {"flavor_access": []}
    assert admin.post(f"/flavors/{fid}/action", {"removeTenantAccess": {"tenant": pa}}).status_code == 404
    assert alice.get(f"/flavors/{fid}").status_code == 404


def test_get_for_boot_refuses_unknown_private_or_disabled_flavors(api: Api, world: dict[str, Any]) -> None:
    ctx = api.services.auth.validate(world["alice"].token)
    assert api.services.flavors.get_for_boot(ctx, "42").name == "m1.nano"
    assert api.services.flavors.get_for_boot(ctx, "http://x/compute/v2.1/flavors/1").name == "m1.tiny"
    with pytest.raises(BadRequest, match="Invalid flavorRef"):
        api.services.flavors.get_for_boot(ctx, "nope")
    with api.services.db.begin() as s:
        s.execute(update(t.Flavor).where(t.Flavor.id == "3").values(disabled=True))
    with pytest.raises(BadRequest):
        api.services.flavors.get_for_boot(ctx, "3")


# -- keypairs -----------------------------------------------------------------------------------

def test_importing_an_ed25519_key_gives_nova_fingerprint_and_shapes(world: dict[str, Any]) -> None:
    alice = world["alice"]
    r = alice.post("/os-keypairs", {"keypair": {"name": "kp1", "public_key": ED25519}})
    assert r.status_code == 200  # 2.1
    made = r.json()["keypair"]
    assert made["fingerprint"] == md5_fingerprint(ED25519)
    assert set(made) == {"name", "public_key", "fingerprint", "user_id"}
    assert made["user_id"] == world["a"]["user_id"]
    assert alice.post("/os-keypairs", {"keypair": {"name": "kp1", "public_key": ED25519}}).status_code == 409
    listed = alice.at("2.2").get("/os-keypairs").json()["keypairs"]
    assert listed == [{"keypair": {"name": "kp1", "public_key": ED25519, "fingerprint": made["fingerprint"],
                                   "type": "ssh"}}]
    shown = alice.get("/os-keypairs/kp1").json()["keypair"]
    assert shown["deleted"] is False and isinstance(shown["id"], int) and "type" not in shown
    assert world["bob"].get("/os-keypairs/kp1").status_code == 404
    assert alice.get("/os-keypairs").json()["keypairs"][0]["keypair"].keys() == {"name", "public_key",
                                                                                   "fingerprint"}
    assert alice.delete("/os-keypairs/kp1").status_code == 202
    assert alice.get("/os-keypairs/kp1").status_code == 404


def test_generated_keypairs_return_the_private_key_once(world: dict[str, Any]) -> None:
    alice = world["alice"].at("2.10")
    r = alice.post("/os-keypairs", {"keypair": {"name": "gen", "type": "ssh"}})
    assert r.status_code == 201
    made = r.json()["keypair"]
    assert made["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert made["public_key"].startswith("ssh-rsa ") and made["type"] == "ssh"
    assert made["fingerprint"] == md5_fingerprint(made["public_key"])
    assert "private_key" not in alice.get("/os-keypairs/gen").json()["keypair"]
    assert alice.delete("/os-keypairs/gen").status_code == 204


def test_keypair_validation_versions_and_admin_user_id(world: dict[str, Any]) -> None:
    alice, admin = world["alice"], world["admin"]
    assert alice.post("/os-keypairs", {"keypair": {"name": "x", "public_key": "ssh-rsa nope"}}).status_code == 400
    assert alice.post("/os-keypairs", {"keypair": {"name": "bad/name", "public_key": ED25519}}).status_code == 400
    assert alice.post("/os-keypairs", {"keypair": {"name": "t", "type": "ssh",
                                                   "public_key": ED25519}}).status_code == 400  # 2.1: no type
    assert alice.post("/os-keypairs", {"keypair": {"name": "t", "extra": 1}}).status_code == 400
    uid = world["a"]["user_id"]
    r = admin.at("2.10").post("/os-keypairs", {"keypair": {"name": "for-alice", "public_key": ED25519,
                                                           "user_id": uid}})
    assert r.status_code == 201 and r.json()["keypair"]["user_id"] == uid
    assert [k["keypair"]["name"] for k in alice.get("/os-keypairs").json()["keypairs"]] == ["for-alice"]
    assert admin.at("2.10").get("/os-keypairs", user_id=uid).json()["keypairs"][0]["keypair"]["name"] == "for-alice"
    assert alice.at("2.10").get("/os-keypairs", user_id=world["b"]["user_id"]).status_code == 403


def test_keypair_paging_from_2_35(world: dict[str, Any]) -> None:
    alice = world["alice"].at("2.35")
    for name in ("a", "b", "c"):
        assert alice.post("/os-keypairs", {"keypair": {"name": name, "public_key": ED25519}}).status_code == 201
    page = alice.get("/os-keypairs", limit="2").json()
    assert [k["keypair"]["name"] for k in page["keypairs"]] == ["a", "b"]
    assert "marker=b" in page["keypairs_links"][0]["href"]
    assert [k["keypair"]["name"] for k in alice.get("/os-keypairs", marker="b").json()["keypairs"]] == ["c"]


def test_keypair_quota_is_per_user(api: Api, world: dict[str, Any]) -> None:
    pa = world["a"]["project_id"]
    assert world["admin"].put(f"/os-quota-sets/{pa}", {"quota_set": {"key_pairs": 1}}).status_code == 200
    alice = world["alice"]
    assert alice.post("/os-keypairs", {"keypair": {"name": "one", "public_key": ED25519}}).status_code == 200
    r = alice.post("/os-keypairs", {"keypair": {"name": "two", "public_key": ED25519}})
    assert r.status_code == 403 and "too many key pairs" in r.json()["forbidden"]["message"]
    ctx = api.services.auth.validate(alice.token)
    assert api.services.keypairs.get_for_boot(ctx, "one").name == "one"
    with pytest.raises(BadRequest, match="Invalid key_name provided"):
        api.services.keypairs.get_for_boot(ctx, "two")


# -- quotas and limits --------------------------------------------------------------------------

def test_quota_show_defaults_update_detail_and_reset(api: Api, world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    pa, ua = world["a"]["project_id"], world["a"]["user_id"]
    shown = alice.get(f"/os-quota-sets/{pa}").json()["quota_set"]
    assert shown["id"] == pa and shown["instances"] == 10 and shown["cores"] == 20 and shown["ram"] == 51200
    assert shown["floating_ips"] == 10 and shown["security_group_rules"] == 20
    assert "floating_ips" not in alice.at("2.36").get(f"/os-quota-sets/{pa}").json()["quota_set"]
    assert alice.get(f"/os-quota-sets/{world['b']['project_id']}").status_code == 403
    assert alice.put(f"/os-quota-sets/{pa}", {"quota_set": {"cores": 1}}).status_code == 403
    add_instance(api, pa, ua, host=None, vcpus=2, ram=1024)
    add_instance(api, pa, ua, host=None, vcpus=4, ram=1024, vm_state="deleted")
    r = admin.put(f"/os-quota-sets/{pa}", {"quota_set": {"cores": 1}})
    assert r.status_code == 400
    r = admin.put(f"/os-quota-sets/{pa}", {"quota_set": {"cores": 1, "force": True}})
    assert r.status_code == 200 and "id" not in r.json()["quota_set"] and r.json()["quota_set"]["cores"] == 1
    r = admin.put(f"/os-quota-sets/{pa}", {"quota_set": {"cores": 8, "instances": -1}})
    assert r.json()["quota_set"]["cores"] == 8
    assert admin.put(f"/os-quota-sets/{pa}", {"quota_set": {"cores": -2}}).status_code == 400
    assert admin.put(f"/os-quota-sets/{pa}", {"quota_set": {"bogus": 1}}).status_code == 400
    assert admin.at("2.36").put(f"/os-quota-sets/{pa}", {"quota_set": {"floating_ips": 1}}).status_code == 400
    detail = alice.get(f"/os-quota-sets/{pa}/detail").json()["quota_set"]
    assert detail["cores"] == {"limit": 8, "in_use": 2, "reserved": 0}
    assert detail["instances"] == {"limit": -1, "in_use": 1, "reserved": 0}
    assert detail["ram"]["in_use"] == 1024
    defaults = alice.get(f"/os-quota-sets/{pa}/defaults").json()["quota_set"]
    assert defaults["cores"] == 20 and defaults["id"] == pa
    assert alice.delete(f"/os-quota-sets/{pa}").status_code == 403
    assert admin.delete(f"/os-quota-sets/{pa}").status_code == 202
    assert alice.get(f"/os-quota-sets/{pa}").json()["quota_set"]["cores"] == 20


def test_quota_check_names_the_quota_inside_a_transaction(api: Api, world: dict[str, Any]) -> None:
    pa, ua = world["a"]["project_id"], world["a"]["user_id"]
    add_instance(api, pa, ua, host=None, vcpus=18, ram=1024)
    quotas = api.services.quotas
    with api.services.db.begin() as s:
        quotas.check(s, pa, {"instances": 1, "cores": 2, "ram": 512})
        with pytest.raises(QuotaExceeded) as err:
            quotas.check(s, pa, {"instances": 1, "cores": 4})
    assert str(err.value) == "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"
    assert err.value.status == 403 and err.value.context["resource"] == "cores"


def test_limits_follow_the_microversion(api: Api, world: dict[str, Any]) -> None:
    alice = world["alice"]
    pa, ua = world["a"]["project_id"], world["a"]["user_id"]
    add_instance(api, pa, ua, host=None, vcpus=2, ram=2048)
    absolute = alice.get("/limits").json()["limits"]["absolute"]
    assert absolute["maxTotalCores"] == 20 and absolute["totalCoresUsed"] == 2
    assert absolute["totalRAMUsed"] == 2048 and absolute["totalInstancesUsed"] == 1
    assert absolute["maxImageMeta"] == 128 and absolute["maxSecurityGroups"] == 10
    assert "totalFloatingIpsUsed" in absolute and alice.get("/limits").json()["limits"]["rate"] == []
    at_236 = alice.at("2.36").get("/limits").json()["limits"]["absolute"]
    assert "maxSecurityGroups" not in at_236 and "totalFloatingIpsUsed" not in at_236
    assert "maxImageMeta" in at_236
    at_247 = alice.at("2.47").get("/limits").json()["limits"]["absolute"]
    assert "maxImageMeta" not in at_247 and at_247["maxPersonality"] == 5
    assert alice.get("/limits", tenant_id=world["b"]["project_id"]).status_code == 403
    other = world["admin"].get("/limits", tenant_id=pa).json()["limits"]["absolute"]
    assert other["totalCoresUsed"] == 2


# -- hypervisors and zones ----------------------------------------------------------------------

def test_hypervisors_from_a_heartbeat(api: Api, world: dict[str, Any]) -> None:
    admin = world["admin"]
    node_id = heartbeat(api)
    assert heartbeat(api) == node_id  # the row is updated, not duplicated
    add_instance(api, world["a"]["project_id"], world["a"]["user_id"], host="node1", vcpus=2, ram=1024, disk=5)
    listed = admin.get("/os-hypervisors").json()["hypervisors"]
    assert len(listed) == 1
    hid = listed[0]["id"]
    assert isinstance(hid, int)
    assert listed[0] == {"id": hid, "hypervisor_hostname": "node1", "state": "up", "status": "enabled"}
    detail = admin.get("/os-hypervisors/detail").json()["hypervisors"][0]
    assert detail["vcpus_used"] == 2 and detail["memory_mb_used"] == 512 + 1024
    assert detail["free_ram_mb"] == 16384 - 1536 and detail["local_gb_used"] == 5
    assert detail["running_vms"] == 1 and detail["disk_available_least"] == 90
    assert detail["service"] == {"host": "node1", "id": hid, "disabled_reason": None}
    assert json.loads(detail["cpu_info"])["arch"] == "x86_64"  # a string below 2.28
    assert admin.at("2.28").get(f"/os-hypervisors/{hid}").json()["hypervisor"]["cpu_info"]["arch"] == "x86_64"
    uptime = admin.get(f"/os-hypervisors/{hid}/uptime").json()["hypervisor"]
    assert uptime["uptime"] == " 10:00:00 up 1 day" and "vcpus" not in uptime
    assert admin.get("/os-hypervisors/12345/uptime").status_code == 404
    assert admin.get("/os-hypervisors/not-a-number").status_code == 404
    assert admin.get("/os-hypervisors/ode/search").json()["hypervisors"][0]["id"] == hid
    assert admin.get("/os-hypervisors/zzz/search").status_code == 404
    servers = admin.get("/os-hypervisors/node/servers").json()["hypervisors"][0]["servers"]
    assert servers[0]["name"] == "vm"
    stats = admin.get("/os-hypervisors/statistics").json()["hypervisor_statistics"]
    assert stats["count"] == 1 and stats["vcpus"] == 8 and stats["running_vms"] == 1
    assert world["alice"].get("/os-hypervisors").status_code == 403


def test_hypervisor_state_and_paging(api: Api, world: dict[str, Any]) -> None:
    admin = world["admin"]
    for name in ("h1", "h2", "h3"):
        heartbeat(api, name)
    with api.services.db.begin() as s:
        s.execute(update(t.ComputeNode).where(t.ComputeNode.host == "h2")
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    states = {h["hypervisor_hostname"]: h["state"] for h in admin.get("/os-hypervisors").json()["hypervisors"]}
    assert states == {"h1": "up", "h2": "down", "h3": "up"}
    assert "hypervisors_links" not in admin.get("/os-hypervisors", limit="1").json()  # 2.1: no paging
    page = admin.at("2.33").get("/os-hypervisors", limit="2").json()
    assert len(page["hypervisors"]) == 2 and "hypervisors_links" in page
    rest = admin.at("2.33").get("/os-hypervisors", marker=str(page["hypervisors"][1]["id"])).json()
    assert len(rest["hypervisors"]) == 1
    usage = {h.host: h for h in api.services.hosts.host_states(api.services.db())}
    assert usage["h2"].up is False and usage["h1"].reserved_host_memory_mib == 512


def test_availability_zones(api: Api, world: dict[str, Any]) -> None:
    assert world["alice"].get("/os-availability-zone").json() == {"availabilityZoneInfo": []}
    heartbeat(api, "h1", az="az1")
    heartbeat(api, "h2", az="nova")
    zones = world["alice"].get("/os-availability-zone").json()["availabilityZoneInfo"]
    assert zones == [{"zoneName": "az1", "zoneState": {"available": True}, "hosts": None},
                     {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]
    assert world["alice"].get("/os-availability-zone/detail").status_code == 403
    detail = world["admin"].get("/os-availability-zone/detail").json()["availabilityZoneInfo"]
    by_name = {z["zoneName"]: z for z in detail}
    assert set(by_name) == {"internal", "az1", "nova"}
    assert by_name["az1"]["hosts"]["h1"]["nova-compute"]["available"] is True


def test_generated_x509_keypairs_carry_a_certificate_and_its_sha1_fingerprint(world: dict[str, Any]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    alice = world["alice"].at("2.2")
    r = alice.post("/os-keypairs", {"keypair": {"name": "cert", "type": "x509"}})
    assert r.status_code == 201, r.text
    made = r.json()["keypair"]
    assert made["type"] == "x509" and made["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(made["public_key"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha1(der).hexdigest()
    assert made["fingerprint"] == ":".join(digest[i:i + 2] for i in range(0, 40, 2))
    shown = alice.get("/os-keypairs/cert").json()["keypair"]
    assert shown["type"] == "x509" and shown["public_key"] == made["public_key"] and "private_key" not in shown
