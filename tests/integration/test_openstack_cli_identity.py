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
