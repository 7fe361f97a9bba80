"""The agent's calls (``api/agent/calls.py``) are answered ahead of the API's router: the same
rules and fault format as every route, and the same limits on what a body may be."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.functional.agent.test_host_identity import A, add_host, call, join


@pytest.fixture
def host(api: Api) -> tuple[str, str]:
    name = "calls-h1"
    status, joined = join(api, add_host(api, api.admin(), name))
    assert status == 200
    return name, joined["credential"]


def post(api: Api, cred: str, name: str, method: str, body: bytes) -> tuple[int, dict[str, object], str]:
    r = api.http.post(f"{A}/hosts/{name}/calls/{method}", content=body,
                      headers={"Authorization": f"Bearer {cred}", "Content-Type": "application/json"})
    return r.status_code, r.json(), r.headers.get("x-openstack-request-id", "")


def test_faults_are_in_the_one_format_with_a_request_id(api: Api, host: tuple[str, str]) -> None:
    name, cred = host
    status, body, rid = post(api, cred, name, "no_such_method", b"{}")
    assert status == 404 and rid.startswith("req-")
    assert body == {"error": {"code": 404, "title": "Not Found",
                              "message": "The agent protocol has no method no_such_method."}}
    status, body, _ = post(api, cred, name, "pending_work", b'{"host": 7, "extra": 1}')
    assert status == 400
    assert str(body["error"]["message"]).startswith("Invalid arguments for pending_work:")  # type: ignore[index]
    assert call(api, None, name, "pending_work", host=name)[0] == 401


def test_a_body_too_large_or_too_deep_is_refused_before_it_is_parsed(api: Api, host: tuple[str, str]) -> None:
    name, cred = host
    limit = api.services.config.server.max_body_bytes
    status, body, _ = post(api, cred, name, "pending_work", b" " * (limit + 1))
    assert status == 413, body
    status, body, _ = post(api, cred, name, "pending_work", b"[" * 5000 + b"]" * 5000)
    assert status == 400, body


def test_an_unexpected_error_is_a_500_that_says_only_where_to_look(
        api: Api, host: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    name, cred = host

    def broken(host: str) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api.services.host_link, "pending_work", broken)
    status, body, rid = post(api, cred, name, "pending_work", b'{"host": "calls-h1"}')
    assert status == 500
    assert body == {"error": {"code": 500, "title": "Internal Server Error", "message":
                              "An unexpected error occurred; the request id names it in the server log."}}
    assert "secret detail" in caplog.text and rid
