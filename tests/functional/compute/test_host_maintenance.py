"""Host maintenance without live migration: os-services disable (2.1 and 2.53 forms) and delete.

The requests are the ones ``openstack compute service set --disable --disable-reason R HOST
nova-compute`` and ``openstack compute service delete ID`` send: by host and binary below 2.53, by
the service's UUID from 2.53.  (Our advertised maximum is 2.47; the 2.53 forms are served for when
it is raised, and tested here with the maximum raised.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Api
from tests.functional.compute.test_flavors_keypairs_quotas import Nova, heartbeat
from yunstack.api.compute import microversion
from yunstack.db.tables import compute as t
from yunstack.types import utcnow


@pytest.fixture
def admin(api: Api, monkeypatch: pytest.MonkeyPatch) -> Nova:
    monkeypatch.setattr(microversion, "MAX", (2, 53))
    heartbeat(api, "m1")
    heartbeat(api, "m2")
    return Nova(api, api.admin())


def test_disable_with_a_reason_by_host_and_binary_below_2_53(admin: Nova) -> None:
    r = admin.put("/os-services/disable-log-reason", {"host": "m1", "binary": "nova-compute",
                                                      "disabled_reason": "maintenance"})
    assert r.status_code == 200, r.text
    assert r.json()["service"] == {"host": "m1", "binary": "nova-compute", "status": "disabled",
                                   "disabled_reason": "maintenance"}
    listed = {s["host"]: s for s in admin.get("/os-services").json()["services"]}
    assert isinstance(listed["m1"]["id"], int)
    assert (listed["m1"]["status"], listed["m1"]["disabled_reason"]) == ("disabled", "maintenance")


def test_from_2_53_services_are_named_by_uuid_and_updated_by_id(admin: Nova) -> None:
    nova = admin.at("2.53")
    listed = {s["host"]: s for s in nova.get("/os-services").json()["services"]}
    sid = listed["m1"]["id"]
    assert isinstance(sid, str) and len(sid) == 36
    r = nova.put(f"/os-services/{sid}", {"status": "disabled", "disabled_reason": "maintenance"})
    assert r.status_code == 200, r.text
    service = r.json()["service"]
    assert (service["id"], service["host"], service["status"], service["disabled_reason"]) == \
        (sid, "m1", "disabled", "maintenance")
    assert nova.put(f"/os-services/{sid}", {"status": "enabled", "disabled_reason": "x"}).status_code == 400
    assert nova.put(f"/os-services/{sid}", {}).status_code == 400
    assert nova.put("/os-services/00000000-0000-0000-0000-000000000000", {"status": "enabled"}).status_code == 404
    r = nova.put(f"/os-services/{sid}", {"status": "enabled"})
    assert (r.json()["service"]["status"], r.json()["service"]["disabled_reason"]) == ("enabled", None)


def test_a_down_host_with_no_servers_is_deleted_and_its_credential_revoked(admin: Nova, api: Api) -> None:
    credential = api.services.hostauth.issue("m2")
    with api.services.db.begin() as s:
        node = s.query(t.ComputeNode).filter_by(host="m2").one()
        node.updated_at = utcnow() - timedelta(seconds=api.services.hosts.down_after + 1)
    listed = {s["host"]: s for s in admin.at("2.53").get("/os-services").json()["services"]}
    assert listed["m2"]["state"] == "down"
    assert admin.at("2.53").delete(f"/os-services/{listed['m2']['id']}").status_code == 204
    assert "m2" not in {s["host"] for s in admin.get("/os-services").json()["services"]}
    assert admin.at("2.53").delete(f"/os-services/{listed['m2']['id']}").status_code == 404
    r = api.http.post("/agent/v1/hosts/m2/calls/pending_work", content=b'{"host": "m2"}',
                      headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"})
    assert r.status_code == 401


def test_a_host_with_servers_is_not_deleted_and_only_admins_delete(admin: Nova, api: Api) -> None:
    from tests.functional.identity.test_identity_api import make_member

    sid = next(s["id"] for s in admin.get("/os-services").json()["services"] if s["host"] == "m1")
    with api.services.db.begin() as s:
        s.add(t.Instance(id="11111111-1111-1111-1111-111111111111", name="x", hostname="x", project_id="p",
                         user_id="u", host="m1", availability_zone="nova",
                         flavor={"vcpus": 1, "ram": 64, "disk": 1, "ephemeral": 0}, image_id="i",
                         vm_state="active", power_state=1, progress=100, locked=False, config_drive=False,
                         created_at=utcnow(), updated_at=utcnow()))
    r = admin.delete(f"/os-services/{sid}")
    assert r.status_code == 409, r.text
    make_member(api, admin.token, "alpha", "alice")
    alice = Nova(api, api.login("alice", "alice-pw", "alpha"))
    assert alice.delete(f"/os-services/{sid}").status_code == 403
