"""An httpx-based client: authenticates against Keystone, finds endpoints in the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


class ApiError(Exception):
    """Raised when the API answers with an error; carries the status and the fault's message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


@dataclass(frozen=True, kw_only=True)
class CloudCredentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = "RegionOne"


def load_cloud(clouds_yaml: Path, cloud: str = "yunstack") -> CloudCredentials:
    """Read one cloud from a clouds.yaml that ``yun up`` wrote."""
    data = yaml.safe_load(clouds_yaml.read_text())
    entry = data["clouds"][cloud]
    auth = entry["auth"]
    return CloudCredentials(auth_url=auth["auth_url"], username=auth["username"],
                            password=auth["password"], project_name=auth["project_name"],
                            user_domain_name=auth.get("user_domain_name", "Default"),
                            project_domain_name=auth.get("project_domain_name", "Default"),
                            region_name=entry.get("region_name", "RegionOne"))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and body:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(body)[:500]


class YunClient:
    """A session against one cloud.  ``get``/``post``/... take a service type and a path."""

    def __init__(self, base_url: str, *, credentials: CloudCredentials | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._creds = credentials
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._token: str | None = None
        self._catalog: dict[str, str] = {}
        self.token_body: dict[str, Any] = {}

    @classmethod
    def from_clouds_yaml(cls, path: Path, cloud: str = "yunstack") -> YunClient:
        creds = load_cloud(path, cloud)
        base = creds.auth_url.split("/identity", 1)[0]
        return cls(base, credentials=creds)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> YunClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        r = self._http.get(f"{self.base_url}/healthz")
        if r.status_code != 200:
            raise ApiError(r.status_code, _message(r))
        data: dict[str, Any] = r.json()
        return data

    def authenticate(self) -> str:
        if self._creds is None:
            raise ApiError(401, "No credentials configured.")
        c = self._creds
        return self.issue_token({
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name}, "password": c.password}}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}},
        })

    def issue_token(self, auth: dict[str, Any]) -> str:
        """Ask Keystone for a token (``auth`` is the body's ``auth`` object); it becomes this client's."""
        r = self._http.post(f"{self.base_url}/identity/v3/auth/tokens", json={"auth": auth})
        if r.status_code != 201:
            raise ApiError(r.status_code, _message(r))
        body = r.json()["token"]
        catalog = {svc["type"]: ep["url"] for svc in body.get("catalog", []) for ep in svc["endpoints"]
                   if ep["interface"] == "public"}
        # Swapped in whole: another thread's request sees the old token and catalog or the new ones.
        self._token, self.token_body, self._catalog = r.headers["x-subject-token"], body, catalog
        return self._token

    @property
    def token(self) -> str | None:
        return self._token

    def revoke(self, token: str | None = None) -> None:
        """Revoke ``token`` (by default this client's own, which it then forgets), authenticating
        with this client's token.  Keystone also revokes every token rescoped from the one revoked."""
        own = self._token
        if own is None:
            return
        subject = token or own
        if subject == own:
            self._token = None
        r = self._http.delete(f"{self.base_url}/identity/v3/auth/tokens",
                              headers={"X-Auth-Token": own, "X-Subject-Token": subject})
        if r.status_code not in (204, 401, 404):
            raise ApiError(r.status_code, _message(r))

    def endpoint(self, service: str) -> str:
        if self._token is None:
            self.authenticate()
        if service == "identity" and service not in self._catalog:
            return f"{self.base_url}/identity/v3"  # where we signed in (an unscoped token has no catalog)
        try:
            return self._catalog[service]
        except KeyError:
            raise ApiError(404, f"The cloud has no {service} service in its catalog.") from None

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.endpoint(service) + path
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["X-Auth-Token"] = self._token or ""
        r = self._http.request(method, url, headers=headers, **kwargs)
        if r.status_code == 401 and self._creds is not None:
            self.authenticate()
            headers["X-Auth-Token"] = self._token or ""
            r = self._http.request(method, url, headers=headers, **kwargs)
        if r.status_code >= 400:
            raise ApiError(r.status_code, _message(r))
        return r

    def get(self, service: str, path: str, **kwargs: Any) -> Any:
        return self.request("GET", service, path, **kwargs).json()

    def post(self, service: str, path: str, **kwargs: Any) -> Any:
        r = self.request("POST", service, path, **kwargs)
        return r.json() if r.content else None

    def put(self, service: str, path: str, **kwargs: Any) -> Any:
        r = self.request("PUT", service, path, **kwargs)
        return r.json() if r.content else None

    def delete(self, service: str, path: str, **kwargs: Any) -> None:
        self.request("DELETE", service, path, **kwargs)

    def add_host(self, name: str) -> dict[str, Any]:
        """Add a compute host (admin): its name, one-time ``join_token`` and ``expires_at``."""
        if self._token is None:
            self.authenticate()
        r = self._http.post(f"{self.base_url}/agent/v1/hosts", json={"host": {"name": name}},
                            headers={"X-Auth-Token": self._token or ""})
        if r.status_code != 201:
            raise ApiError(r.status_code, _message(r))
        host: dict[str, Any] = r.json()["host"]
        return host

    def memory_balancer(self, *, apply: bool = False) -> dict[str, Any]:
        """The cluster memory balancer's plan (admin); with ``apply``, its applicable moves queued as live
        migrations, each one's result in ``applied`` (``os-yunstack-memory-balancer``)."""
        if apply:
            body = self.post("compute", "/os-yunstack-memory-balancer/apply")
        else:
            body = self.get("compute", "/os-yunstack-memory-balancer")
        plan: dict[str, Any] = body["memory_balancer"]
        return plan

    def memory_balancer_history(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The balancer's recorded passes, newest first (admin; ``os-yunstack-memory-balancer/history``)."""
        passes: list[dict[str, Any]] = self.get("compute", "/os-yunstack-memory-balancer/history",
                                                params={"limit": limit})["passes"]
        return passes
