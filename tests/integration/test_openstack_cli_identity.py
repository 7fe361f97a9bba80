"""The real python-openstackclient drives a real `yun up`: identity commands."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cloud import RunningCloud, start_cloud

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    running = start_cloud(tmp_path_factory.mktemp("cloud"))
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log.read_text()[-3000:]


def test_clouds_yaml_has_admin_and_demo(cloud: RunningCloud) -> None:
    data = yaml.safe_load(cloud.clouds_yaml.read_text())
    assert set(data["clouds"]) == {"yunstack", "yunstack-demo"}
    assert data["clouds"]["yunstack"]["auth"]["auth_url"] == f"{cloud.url}/identity/v3"


def test_token_issue_and_catalog(cloud: RunningCloud) -> None:
    token = cloud.osc_json("token", "issue")
    assert token["id"] and token["project_id"] and token["user_id"]
    catalog = cloud.osc_json("catalog", "list")
    assert "identity" in {c["Type"] for c in catalog}


def test_identity_lifecycle_with_the_openstack_cli(cloud: RunningCloud) -> None:
    project = cloud.osc_json("project", "create", "clip")
    assert project["name"] == "clip"
    assert "clip" in {p["Name"] for p in cloud.osc_json("project", "list")}
    user = cloud.osc_json("user", "create", "--password", "pw-one", "--project", "clip", "clio")
    assert user["name"] == "clio"
    assert "clio" in {u["Name"] for u in cloud.osc_json("user", "list")}
    cloud.osc("user", "set", "--password", "pw-two", "clio")
    cloud.osc("role", "add", "--project", "clip", "--user", "clio", "member")
    rows = cloud.osc_json("role", "assignment", "list", "--project", "clip", "--names")
    assert {(r["User"], r["Role"]) for r in rows} == {("clio@Default", "member")}

    # The new user logs in with the new password through a clouds.yaml of its own.
    extra = yaml.safe_load(cloud.clouds_yaml.read_text())
    auth = dict(extra["clouds"]["yunstack"]["auth"], username="clio", password="pw-two", project_name="clip")
    extra["clouds"]["clio"] = dict(extra["clouds"]["yunstack"], auth=auth)
    cloud.clouds_yaml.write_text(yaml.safe_dump(extra))
    assert cloud.osc_json("token", "issue", cloud="clio")["project_id"] == project["id"]

    cred = cloud.osc_json("application", "credential", "create", "deploy", cloud="clio")
    assert cred["Secret"]
    extra["clouds"]["clio-app"] = {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": auth["auth_url"], "application_credential_id": cred["ID"],
                 "application_credential_secret": cred["Secret"]},
        "region_name": "RegionOne", "identity_api_version": 3,
    }
    cloud.clouds_yaml.write_text(yaml.safe_dump(extra))
    assert cloud.osc_json("token", "issue", cloud="clio-app")["project_id"] == project["id"]

    # A member may not create projects: the CLI reports the 403.
    denied = cloud.osc("project", "create", "nope", cloud="clio", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr

    cloud.osc("project", "delete", "clip")
    assert "clip" not in {p["Name"] for p in cloud.osc_json("project", "list")}


def test_second_start_on_the_same_state_dir_keeps_everything(tmp_path: Path) -> None:
    first = start_cloud(tmp_path / "s")
    try:
        first.osc("project", "create", "keepme")
        before = first.clouds_yaml.read_text()
    finally:
        assert first.stop() == 0
    second = start_cloud(tmp_path / "s")
    try:
        assert second.clouds_yaml.read_text().replace(str(second.port), "P") == before.replace(
            str(first.port), "P")
        assert "keepme" in {p["Name"] for p in second.osc_json("project", "list")}
        status = subprocess.run([str(Path(__import__("sys").executable).parent / "yun"), "status",
                                 "--state-dir", str(tmp_path / "s")], capture_output=True, text=True)
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        assert second.stop() == 0


def test_service_and_endpoint_commands_with_the_openstack_cli(cloud: RunningCloud) -> None:
    services = cloud.osc_json("service", "list")
    assert {"identity", "compute", "image", "network"} <= {s["Type"] for s in services}
    endpoints = cloud.osc_json("endpoint", "list")
    compute = [e for e in endpoints if e["Service Type"] == "compute"]
    assert {e["Interface"] for e in compute} == {"public", "internal", "admin"}
    assert all(e["URL"] == f"{cloud.url}/compute/v2.1" and e["Service Name"] == "nova" for e in compute)
    assert {e["Interface"] for e in cloud.osc_json("endpoint", "list", "--interface", "public")} == {"public"}

    made = cloud.osc_json("service", "create", "--name", "swift", "--description", "objects",
                          "object-store")
    assert made["type"] == "object-store" and made["name"] == "swift"
    ep = cloud.osc_json("endpoint", "create", "--region", "RegionOne", "swift", "public",
                        "http://objects.example/v1")
    assert ep["url"] == "http://objects.example/v1" and ep["service_name"] == "swift"
    listed = cloud.osc_json("endpoint", "list", "--service", "object-store")
    assert [e["URL"] for e in listed] == ["http://objects.example/v1"]
    assert "object-store" in {c["Type"] for c in cloud.osc_json("catalog", "list")}
    cloud.osc("endpoint", "set", "--disable", ep["id"])
    assert cloud.osc_json("endpoint", "show", ep["id"])["enabled"] is False
    cloud.osc("service", "delete", "swift")
    assert "object-store" not in {s["Type"] for s in cloud.osc_json("service", "list")}
    assert cloud.osc("endpoint", "show", ep["id"], check=False).returncode != 0

    # The demo user is a member: Keystone's default policy refuses it the catalog admin API.
    denied = cloud.osc("service", "list", cloud="yunstack-demo", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    mine = cloud.osc_json("project", "list", "--my-projects", cloud="yunstack-demo")
    assert [p["Name"] for p in mine] == ["demo"]
