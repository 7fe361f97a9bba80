"""Fixtures for the Neutron tests: two member projects, a reader, admin, and request helpers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member

ID = "/identity/v3"
N = "/networking/v2.0"


class Net:
    """Request helpers bound to one token."""

    def __init__(self, api: Api, token: str) -> None:
        self.api, self.h = api, api.headers(token)

    def get(self, path: str, **params: Any) -> Any:
        return self.api.http.get(N + path, params=params, headers=self.h)

    def post(self, path: str, body: Any) -> Any:
        return self.api.http.post(N + path, json=body, headers=self.h)

    def put(self, path: str, body: Any = None) -> Any:
        return self.api.http.put(N + path, json=body, headers=self.h)

    def delete(self, path: str) -> Any:
        return self.api.http.delete(N + path, headers=self.h)

    def made(self, path: str, key: str, **attrs: Any) -> dict[str, Any]:
        r = self.post(path, {key: attrs})
        assert r.status_code == 201, r.text
        return dict(r.json()[key])

    def network(self, name: str = "net", **attrs: Any) -> dict[str, Any]:
        return self.made("/networks", "network", name=name, **attrs)

    def subnet(self, network_id: str, cidr: str = "10.0.0.0/24", **attrs: Any) -> dict[str, Any]:
        return self.made("/subnets", "subnet", network_id=network_id, cidr=cidr, ip_version=attrs.pop("ip_version", 4),
                         **attrs)

    def port(self, network_id: str, **attrs: Any) -> dict[str, Any]:
        return self.made("/ports", "port", network_id=network_id, **attrs)


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    r = make_member(api, admin, "alpha", "rita", role="reader")
    return {"a": a, "b": b, "r": r,
            "admin": Net(api, admin), "alice": Net(api, api.login("alice", "alice-pw", "alpha")),
            "bob": Net(api, api.login("bob", "bob-pw", "beta")),
            "rita": Net(api, api.login("rita", "rita-pw", "alpha"))}
