"""The app builds its routes, and their pydantic schemas, when it is made and never while serving.

pydantic's schema building is not thread-safe, and FastAPI silences one of its warnings with
``warnings.catch_warnings()``, which is not either: two apps of one process serving their first
requests from two threads (the tests' hosts, a lab) raced there and answered 500.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from yunstack.api.app import create_app
from yunstack.wiring import Services


def test_a_first_request_builds_no_schema(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(services)
    token = Api(services).admin()
    built: list[Any] = []
    original = pydantic.TypeAdapter.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(args[0] if args else kwargs.get("type"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(pydantic.TypeAdapter, "__init__", counting)
    client = TestClient(app, base_url="http://127.0.0.1:8080")
    for path in ("/compute/v2.1/os-migrations", "/compute/v2.1/servers/detail", "/networking/v2.0/ports",
                 "/image/v2/images", "/identity/v3/projects", "/compute/v2.1/os-hypervisors"):
        r = client.get(path, headers={"X-Auth-Token": token, "X-OpenStack-Nova-API-Version": "2.23"})
        assert r.status_code == 200, (path, r.text)
    assert built == []
