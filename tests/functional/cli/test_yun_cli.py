"""The `yun` CLI against a real HTTP server: readable at 80 columns, and JSON for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml

from tests.cloud import free_port
from tests.conftest import Api, make_config
from tests.functional.memory.test_memory_api import ledger, seed
from yunstack.api.app import CATALOG, create_app
from yunstack.wiring import Services, build

YUN = Path(sys.executable).parent / "yun"


@pytest.fixture
def services(tmp_path: Path, db_url: str) -> Iterator[Services]:
    """As conftest's, but on a free port: the catalog must point at the server the CLI talks to."""
    svc = build(make_config(tmp_path, db_url, server={"port": free_port()}))
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def served(services: Services, tmp_path: Path) -> Iterator[Path]:
    """The app on its port (a real uvicorn in a thread); yields a clouds.yaml for the admin."""
    port = services.config.server.port
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"yunstack": {
        "region_name": "RegionOne",
        "auth": {"auth_url": f"http://127.0.0.1:{port}/identity/v3", "username": "admin",
                 "password": "adminpw", "project_name": "admin", "user_domain_name": "Default",
                 "project_domain_name": "Default"}}}}))
    try:
        yield clouds
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def yun(clouds: Path, *args: str) -> str:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds), "COLUMNS": "80", "TERM": "dumb"}
    done = subprocess.run([str(YUN), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_yun_memory_shows_server_names_and_whole_headers_in_80_columns(api: Api, served: Path) -> None:
    seed(api, api.services.config.host_name)
    out = yun(served, "memory")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    # Names, not the first eight characters of an id.
    assert any(line.split()[:1] == ["m0"] for line in lines), out
    assert any(line.split()[:1] == ["m1"] for line in lines), out
    assert "00000000" not in out
    header = next(line for line in lines if "Server" in line)
    assert header.split() == ["Server", "Size", "Resident", "Balloon", "Shared", "Swap", "Working",
                              "Target", "Pressure"]
    assert "saved by KSM" in out and "2.05x" in out


def test_yun_memory_json_parses_and_names_the_servers(api: Api, served: Path) -> None:
    mine, theirs = seed(api, api.services.config.host_name)
    data = json.loads(yun(served, "memory", "-f", "json"))
    servers = {s["instance_id"]: s for s in data[0]["servers"]}
    assert servers[mine]["name"] == "m0" and servers[theirs]["name"] == "m1"
    assert servers[mine]["shared"] == 50 * (1 << 20)


def test_yun_memory_shows_the_templates_line_and_marks_clones(api: Api, served: Path) -> None:
    host = api.services.config.host_name
    mine, theirs = seed(api, host)
    entry = ledger([mine, theirs])
    entry["host"] |= {"templates": [{"key": "3f2a", "resident": 128 * (1 << 20), "clones": 1}],
                      "templates_resident": 128 * (1 << 20)}
    entry["guests"][0] |= {"template": "3f2a", "template_shared": 100 * (1 << 20)}
    api.services.memory.record(host, entry)
    out = yun(served, "memory")
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "templates" in out and "128 (1 clone)" in out, out
    assert any(line.split()[:2] == ["m0", "(clone)"] for line in out.splitlines()), out
    assert not any(line.split()[:2] == ["m1", "(clone)"] for line in out.splitlines()), out


@pytest.mark.parametrize("args,key,expected", [
    (("flavor", "list"), "Name", "m1.nano"),
    (("server", "list"), "Name", "m0"),
    (("image", "list"), "Name", None),
])
def test_every_listing_offers_json(api: Api, served: Path, args: tuple[str, ...], key: str,
                                   expected: str | None) -> None:
    seed(api, api.services.config.host_name)
    api.services.flavors.ensure_defaults()
    rows = json.loads(yun(served, *args, "--format", "json"))
    assert isinstance(rows, list)
    if expected is not None:
        assert expected in {r[key] for r in rows}
    assert all(len(line) <= 80 for line in yun(served, *args).splitlines())
