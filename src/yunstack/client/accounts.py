"""Flavors, quotas, projects, users and roles as an administrator manages them.

Creating and deleting flavors, changing a project's quotas, listing and creating projects and
users and granting roles are admin-only in the API: another token gets a 403 ``ApiError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yunstack.client.http import YunClient

# 2.36: a quota set without the network proxies (floating_ips, security_groups, ...: Neutron's now).
QUOTAS = {"OpenStack-API-Version": "compute 2.36"}


@dataclass(frozen=True, kw_only=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mib: int
    disk_gb: int
    ephemeral_gb: int
    swap_mib: int
    public: bool


@dataclass(frozen=True, kw_only=True)
class Project:
    id: str
    name: str
    description: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class User:
    id: str
    name: str
    email: str
    enabled: bool
    default_project_id: str


@dataclass(frozen=True, kw_only=True)
class Role:
    id: str
    name: str


@dataclass(frozen=True, kw_only=True)
class Grant:
    """One role of one user on one project."""

    project_id: str
    user_id: str
    role_id: str


def list_flavors(client: YunClient) -> list[Flavor]:
    """Every flavor, public and private, by id."""
    found = client.get("compute", "/flavors/detail", params={"is_public": "None"})["flavors"]
    return [Flavor(id=str(f["id"]), name=str(f["name"]), vcpus=int(f["vcpus"]), ram_mib=int(f["ram"]),
                   disk_gb=int(f["disk"]), ephemeral_gb=int(f.get("OS-FLV-EXT-DATA:ephemeral") or 0),
                   swap_mib=int(f.get("swap") or 0), public=bool(f.get("os-flavor-access:is_public", True)))
            for f in found]


def create_flavor(client: YunClient, *, name: str, vcpus: int, ram_mib: int, disk_gb: int,
                  public: bool = True) -> str:
    """A new flavor (its id chosen by the cloud); its id."""
    body = {"flavor": {"name": name, "vcpus": vcpus, "ram": ram_mib, "disk": disk_gb,
                       "os-flavor-access:is_public": public}}
    return str(client.post("compute", "/flavors", json=body)["flavor"]["id"])


def delete_flavor(client: YunClient, flavor_id: str) -> None:
    client.delete("compute", f"/flavors/{flavor_id}")


def quotas(client: YunClient, project_id: str) -> dict[str, int]:
    """A project's compute quotas by resource (-1: no limit)."""
    body = client.get("compute", f"/os-quota-sets/{project_id}", headers=QUOTAS)["quota_set"]
    return {str(k): int(v) for k, v in body.items() if k != "id"}


def set_quotas(client: YunClient, project_id: str, values: dict[str, int]) -> dict[str, int]:
    """Change a project's compute quotas (only those named); the whole set as it is now."""
    body = client.put("compute", f"/os-quota-sets/{project_id}", headers=QUOTAS, json={"quota_set": values})
    return {str(k): int(v) for k, v in body["quota_set"].items() if k != "id"}


def list_projects(client: YunClient) -> list[Project]:
    found = client.get("identity", "/projects")["projects"]
    return sorted((Project(id=str(p["id"]), name=str(p["name"]), description=str(p.get("description") or ""),
                           enabled=bool(p.get("enabled", True))) for p in found), key=lambda p: p.name)


def create_project(client: YunClient, name: str, description: str = "") -> str:
    body = {"project": {"name": name, "description": description}}
    return str(client.post("identity", "/projects", json=body)["project"]["id"])


def list_users(client: YunClient) -> list[User]:
    found = client.get("identity", "/users")["users"]
    return sorted((User(id=str(u["id"]), name=str(u["name"]), email=str(u.get("email") or ""),
                        enabled=bool(u.get("enabled", True)),
                        default_project_id=str(u.get("default_project_id") or "")) for u in found),
                  key=lambda u: u.name)


def create_user(client: YunClient, name: str, password: str, *, project_id: str = "", email: str = "") -> str:
    user: dict[str, Any] = {"name": name, "password": password}
    if project_id:
        user["default_project_id"] = project_id
    if email:
        user["email"] = email
    return str(client.post("identity", "/users", json={"user": user})["user"]["id"])


def list_roles(client: YunClient) -> list[Role]:
    found = client.get("identity", "/roles")["roles"]
    return sorted((Role(id=str(r["id"]), name=str(r["name"])) for r in found), key=lambda r: r.name)


def grant_role(client: YunClient, project_id: str, user_id: str, role_id: str) -> None:
    """Give ``user_id`` the role ``role_id`` on ``project_id`` (Keystone's PUT; granting twice is harmless)."""
    client.put("identity", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")


def list_grants(client: YunClient) -> list[Grant]:
    """Every role assignment on a project (``/role_assignments``)."""
    found = client.get("identity", "/role_assignments")["role_assignments"]
    return [Grant(project_id=str(a["scope"]["project"]["id"]), user_id=str(a["user"]["id"]),
                  role_id=str(a["role"]["id"])) for a in found if "project" in (a.get("scope") or {}) and "user" in a]
