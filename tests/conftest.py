"""Shared fixtures: a database on each backend, services built from a test Config, an API client."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from yunstack import config as configmod
from yunstack.api.app import CATALOG, create_app
from yunstack.db.engine import make_engine, upgrade
from yunstack.wiring import Services, build

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a test that needs a real system part must never silently skip there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, made once per test process: each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


@contextmanager
def postgres_database(prefix: str, template: str | None = None) -> Iterator[tuple[str, str]]:
    """A database of its own on the test PostgreSQL, empty or a copy of ``template``: (its URL, its
    name).  Dropped afterwards, whoever is still connected."""
    admin_url = os.environ.get("YUN_TEST_POSTGRES_URL", "")
    need(bool(admin_url), "PostgreSQL (set YUN_TEST_POSTGRES_URL; scripts/postgres starts one)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a migrated database, made once per test process, for CREATE DATABASE ... TEMPLATE.

    Copying a migrated database takes a quarter of the time of running the migrations again.
    """
    with postgres_database("yt_template") as (url, name):
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # a template must have no open connection while it is copied
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own for each test, on each backend."""
    if request.param == "sqlite":
        source = sqlite3.connect(request.getfixturevalue("sqlite_template"))
        target = sqlite3.connect(tmp_path / "test.db")
        try:
            source.backup(target)  # the backup API copies a WAL database whole
        finally:
            source.close()
            target.close()
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with postgres_database("yt", request.getfixturevalue("postgres_template")) as (url, _):
        yield url


def make_config(tmp_path: Path, db_url: str, **sections: dict[str, Any]) -> configmod.Config:
    overrides: dict[str, dict[str, Any]] = {
        "server": {"state_dir": str(tmp_path / "state"), "port": 8080},
        "database": {"url": db_url},
        # Cheap hashes keep tests fast; production defaults are memory-hard (see config.py).
        "identity": {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "admin_password": "adminpw"},
        # A loaded CI machine once held a test's process still for 30 s (the default threshold) and
        # its one host counted as down; tests of the threshold set it or move a clock past it.
        "compute": {"driver": "fake", "host_down_after": 120.0},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return configmod.load(None, env={}, **overrides)


@pytest.fixture
def services(tmp_path: Path, db_url: str) -> Iterator[Services]:
    svc = build(make_config(tmp_path, db_url))
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    try:
        yield svc
    finally:
        svc.close()


class Api:
    """A test client for the whole API with login helpers."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.http = TestClient(create_app(services), base_url="http://127.0.0.1:8080",
                               raise_server_exceptions=False)

    def login(self, user: str, password: str, project: str | None = None) -> str:
        body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": user, "domain": {"id": "default"}, "password": password}}}}}
        if project is not None:
            body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        r = self.http.post("/identity/v3/auth/tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.headers["x-subject-token"])

    def headers(self, token: str) -> dict[str, str]:
        return {"X-Auth-Token": token}

    def admin(self) -> str:
        return self.login("admin", "adminpw", "admin")


@pytest.fixture
def api(services: Services) -> Iterator[Api]:
    client = Api(services)
    try:
        yield client
    finally:
        client.http.close()
