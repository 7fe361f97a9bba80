"""The one quota engine under concurrency: two API workers (two engines, two connection pools)
creating in one project at once never pass its quota, for compute (403) and networking (409)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member
from yunstack.api.app import create_app
from yunstack.wiring import Services, build

ROUNDS = 8


@pytest.fixture
def workers(services: Services) -> Iterator[list[Any]]:
    other = build(services.config, migrate=False)
    try:
        yield [create_app(services), create_app(other)]
    finally:
        other.close()


def at_once(workers: list[Any], token: str, request: Callable[[TestClient, int], Any]) -> list[Any]:
    """``ROUNDS`` requests released together, alternating between the workers."""
    start = threading.Barrier(ROUNDS)

    def one(n: int) -> Any:
        with TestClient(workers[n % 2], base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as http:
            http.headers["X-Auth-Token"] = token
            request(http, -1)  # warm-up (FastAPI builds validators on first use, not thread-safe)
            start.wait()
            return request(http, n)

    with ThreadPoolExecutor(ROUNDS) as pool:
        return list(pool.map(one, range(ROUNDS)))


def test_concurrent_key_pairs_of_one_user_stop_exactly_at_the_quota(api: Api, workers: list[Any]) -> None:
    admin = api.admin()
    who = make_member(api, admin, "alpha", "alice")
    r = api.http.put(f"/compute/v2.1/os-quota-sets/{who['project_id']}", headers=api.headers(admin),
                     json={"quota_set": {"key_pairs": 3}})
    assert r.status_code == 200, r.text
    token = api.login("alice", "alice-pw", "alpha")

    def create(http: TestClient, n: int) -> int:
        if n < 0:
            return int(http.get("/compute/v2.1/os-keypairs").status_code)
        return int(http.post("/compute/v2.1/os-keypairs", json={"keypair": {"name": f"k{n}"}}).status_code)

    codes = at_once(workers, token, create)
    assert sorted(codes) == [200] * 3 + [403] * (ROUNDS - 3), codes
    assert len(api.http.get("/compute/v2.1/os-keypairs", headers=api.headers(token)).json()["keypairs"]) == 3


def test_concurrent_networks_of_one_project_stop_exactly_at_the_quota(api: Api, workers: list[Any]) -> None:
    admin = api.admin()
    who = make_member(api, admin, "alpha", "alice")
    r = api.http.put(f"/networking/v2.0/quotas/{who['project_id']}", headers=api.headers(admin),
                     json={"quota": {"network": 2}})
    assert r.status_code == 200, r.text
    token = api.login("alice", "alice-pw", "alpha")

    def create(http: TestClient, n: int) -> Any:
        if n < 0:
            return http.post("/networking/v2.0/networks", json={"network": {"name": 7}}).status_code
        r = http.post("/networking/v2.0/networks", json={"network": {"name": f"n{n}"}})
        return r.status_code, r.json()

    results = at_once(workers, token, create)
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 2 + [409] * (ROUNDS - 2), results
    refused = next(body for code, body in results if code == 409)
    assert refused["NeutronError"]["type"] == "OverQuota"
    mine = api.http.get("/networking/v2.0/networks", headers=api.headers(token)).json()["networks"]
    assert len([n for n in mine if n["project_id"] == who["project_id"]]) == 2
