"""Eight concurrent creates of one name: exactly one succeeds, seven get 409, none 500.

The attack: a script (or two operators) racing the same create.  Each service checks the name
first, and two requests can both pass that check; the database's UNIQUE constraint then decides,
and the loser must see the same 409 as a sequential duplicate, not an IntegrityError as 500.
Real threads, one client each, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member
from yunstack.api.app import create_app

ID = "/identity/v3"
RACERS = 8


def race(api: Api, path: str, body: dict[str, Any], token: str) -> Counter[int]:
    """POST ``body`` to ``path`` from RACERS threads released together; the status codes."""
    app = create_app(api.services)
    clients = [TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False)
               for _ in range(RACERS)]
    gate = threading.Barrier(RACERS)
    codes: list[int] = []
    lock = threading.Lock()

    def run(client: TestClient) -> None:
        gate.wait()
        r = client.post(path, json=body, headers={"X-Auth-Token": token})
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for c in clients:
        c.close()
    return Counter(codes)


@pytest.mark.parametrize("path,body", [
    (f"{ID}/projects", {"project": {"name": "racy"}}),
    (f"{ID}/users", {"user": {"name": "racy", "password": "pw"}}),
    (f"{ID}/roles", {"role": {"name": "racy"}}),
    (f"{ID}/domains", {"domain": {"name": "racy"}}),
    ("/compute/v2.1/os-keypairs", {"keypair": {"name": "racy"}}),
    ("/compute/v2.1/flavors", {"flavor": {"name": "racy", "ram": 64, "vcpus": 1, "disk": 0}}),
], ids=["project", "user", "role", "domain", "keypair", "flavor"])
def test_concurrent_creates_of_one_name_give_one_success_and_seven_409(
        api: Api, path: str, body: dict[str, Any]) -> None:
    codes = race(api, path, body, api.admin())
    assert sum(n for code, n in codes.items() if code in (200, 201)) == 1, codes
    assert codes[409] == RACERS - 1, codes


def test_concurrent_application_credentials_of_one_name_give_one_201_and_seven_409(api: Api) -> None:
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    token = api.login("alice", "alice-pw", "alpha")
    codes = race(api, f"{ID}/users/{a['user_id']}/application_credentials",
                 {"application_credential": {"name": "racy"}}, token)
    assert codes == Counter({201: 1, 409: RACERS - 1}), codes
