"""The cloud as an administrator sees it: compute hosts, their servers, moving servers, migrations,
the running operations.

Every call here is admin-only in the API (os-hypervisors, os-services, ``all_tenants``,
os-migrateLive, evacuate, os-migrations, os-tasks): another token gets a 403 ``ApiError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yunstack.client.http import ApiError, YunClient

# 2.25: ``block_migration: "auto"`` (every disk here is local, so the cloud copies them).
LIVE = {"OpenStack-API-Version": "compute 2.25"}
# 2.29: evacuate takes ``host`` alone (no ``onSharedStorage``; the scheduler chooses when it is absent).
EVACUATE = {"OpenStack-API-Version": "compute 2.29"}
# 2.23: a migration says its ``migration_type``.
MIGRATIONS = {"OpenStack-API-Version": "compute 2.23"}
COMPUTE = "nova-compute"


@dataclass(frozen=True, kw_only=True)
class Host:
    """One compute host: its agent's state (``up`` or ``down``), the operator's switch, its size and use."""

    name: str
    zone: str
    up: bool
    enabled: bool
    disabled_reason: str
    vcpus: int
    vcpus_used: int
    memory_mib: int
    memory_used_mib: int  # allocated to flavors
    running_vms: int
    hypervisor: str
    updated_at: str  # its agent's last heartbeat


@dataclass(frozen=True, kw_only=True)
class PlacedServer:
    """A server of any project on a host."""

    id: str
    name: str
    status: str
    task_state: str | None
    project_id: str
    host: str

    @property
    def movable(self) -> bool:
        """Live migration takes a running or paused server with nothing in progress."""
        return self.status in ("ACTIVE", "PAUSED") and self.task_state is None


@dataclass(frozen=True, kw_only=True)
class Migration:
    id: int
    server_id: str
    kind: str  # live-migration, migration, resize, evacuation
    status: str
    source: str
    dest: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, kw_only=True)
class Queued:
    """What a drain did with one server: ``queued`` (a live migration), ``skipped`` or ``failed``."""

    server_id: str
    name: str
    result: str
    why: str = ""


def list_hosts(client: YunClient) -> list[Host]:
    """Every compute host by name: os-hypervisors for size and use, os-services for zone and heartbeat."""
    hypervisors = client.get("compute", "/os-hypervisors/detail")["hypervisors"]
    listed = client.get("compute", "/os-services", params={"binary": COMPUTE})["services"]
    services = {str(s["host"]): s for s in listed}
    hosts = []
    for h in hypervisors:
        name = str(h["hypervisor_hostname"])
        service: dict[str, Any] = services.get(name, {})
        hosts.append(Host(name=name, zone=str(service.get("zone") or ""), up=h.get("state") == "up",
                          enabled=h.get("status") == "enabled",
                          disabled_reason=str((h.get("service") or {}).get("disabled_reason") or ""),
                          vcpus=int(h.get("vcpus") or 0), vcpus_used=int(h.get("vcpus_used") or 0),
                          memory_mib=int(h.get("memory_mb") or 0), memory_used_mib=int(h.get("memory_mb_used") or 0),
                          running_vms=int(h.get("running_vms") or 0), hypervisor=str(h.get("hypervisor_type") or ""),
                          updated_at=str(service.get("updated_at") or "")))
    return sorted(hosts, key=lambda h: h.name)


def set_host_enabled(client: YunClient, host: str, enabled: bool, reason: str = "") -> None:
    """Enable a host's compute service, or disable it (the scheduler then places nothing new on it),
    with ``reason`` when given (shown in ``openstack compute service list --long``)."""
    body: dict[str, Any] = {"host": host, "binary": COMPUTE}
    if enabled:
        action = "enable"
    elif reason:
        action, body["disabled_reason"] = "disable-log-reason", reason
    else:
        action = "disable"
    client.put("compute", f"/os-services/{action}", json=body)


def servers_on(client: YunClient, host: str | None = None) -> list[PlacedServer]:
    """Every project's servers (on ``host`` when given), by host then name."""
    params = {"all_tenants": "1", **({"host": host} if host else {})}
    found = client.get("compute", "/servers/detail", params=params)["servers"]
    rows = [PlacedServer(id=str(s["id"]), name=str(s["name"]), status=str(s["status"]),
                         task_state=s.get("OS-EXT-STS:task_state"), project_id=str(s.get("tenant_id") or ""),
                         host=str(s.get("OS-EXT-SRV-ATTR:host") or "")) for s in found]
    return sorted(rows, key=lambda s: (s.host, s.name))


def live_migrate(client: YunClient, server_id: str, host: str | None = None) -> None:
    """Queue a live migration, to ``host`` (through the scheduler's filters) or where the scheduler chooses."""
    client.post("compute", f"/servers/{server_id}/action", headers=LIVE,
                json={"os-migrateLive": {"host": host or None, "block_migration": "auto"}})


def evacuate(client: YunClient, server_id: str, host: str | None = None) -> None:
    """Rebuild a server of a host that is down on another one (the API refuses while its host is up)."""
    client.post("compute", f"/servers/{server_id}/action", headers=EVACUATE,
                json={"evacuate": {"host": host} if host else {}})


def start_drain(client: YunClient, host: str, reason: str) -> list[Queued]:
    """Disable ``host``, then queue a live migration off it for each running or paused server.

    Unlike ``drain.drain_host`` (the CLI's, which moves one server at a time and follows each to
    its end) this returns at once: a web request cannot wait for every migration.  Stopped
    servers and servers busy with something else are skipped; ``drain_host`` moves stopped ones.
    """
    set_host_enabled(client, host, False, reason)
    results = []
    for server in servers_on(client, host):
        if not server.movable:
            why = f"{server.status}{', ' + server.task_state if server.task_state else ''}: only a running or " \
                  "paused server moves live"
            results.append(Queued(server_id=server.id, name=server.name, result="skipped", why=why))
            continue
        try:
            live_migrate(client, server.id)
        except ApiError as exc:  # this server stays; the others still go
            results.append(Queued(server_id=server.id, name=server.name, result="failed", why=exc.message))
        else:
            results.append(Queued(server_id=server.id, name=server.name, result="queued"))
    return results


def list_migrations(client: YunClient, *, host: str | None = None) -> list[Migration]:
    """Every migration (live, cold, resize, evacuation), newest first."""
    found = client.get("compute", "/os-migrations", headers=MIGRATIONS, params={"host": host} if host else {})
    return [Migration(id=int(m["id"]), server_id=str(m["instance_uuid"]), kind=str(m.get("migration_type") or ""),
                      status=str(m["status"]), source=str(m.get("source_compute") or ""),
                      dest=str(m.get("dest_compute") or ""), created_at=str(m.get("created_at") or ""),
                      updated_at=str(m.get("updated_at") or "")) for m in found["migrations"]]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One piece of the cloud's long-running work (``os-tasks``): a step a host runs under a lease,
    or a group of steps (``step`` empty)."""

    id: str
    kind: str  # e.g. server.migrate
    step: str
    state: str  # queued, running, succeeded, failed, cancelled
    resource_type: str
    resource_id: str
    host: str
    attempt: int
    max_attempts: int
    reason: str  # why it failed
    created_at: str
    updated_at: str

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def list_tasks(client: YunClient, *, state: str | None = None, limit: int = 100) -> list[Task]:
    """The newest ``limit`` tasks (in ``state`` when given), newest first."""
    params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
    return [Task(id=str(x["id"]), kind=str(x["kind"]), step=str(x.get("step") or ""), state=str(x["state"]),
                 resource_type=str(x.get("resource_type") or ""), resource_id=str(x.get("resource_id") or ""),
                 host=str(x.get("host") or ""), attempt=int(x.get("attempt") or 0),
                 max_attempts=int(x.get("max_attempts") or 0), reason=str(x.get("reason") or ""),
                 created_at=str(x.get("created_at") or ""), updated_at=str(x.get("updated_at") or ""))
            for x in client.get("compute", "/os-tasks", params=params)["tasks"]]
