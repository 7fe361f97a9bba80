"""Drain a compute host for maintenance: disable it, then move its servers away.

Nova has no drain call; operators disable the host's compute service and live-migrate what runs
on it (`nova host-evacuate-live`).  This does the same through the public API, so it works
against any cloud this client can reach and needs nothing new on the server side:

1. the host's ``nova-compute`` service is disabled with a reason, so the scheduler puts nothing
   new on it (and names it when it refuses it);
2. each of its servers, one at a time, moves with no target (the scheduler chooses, and a disabled
   host is never a candidate) and is followed until it has left or its migration ended in error:
   a running or paused one by live migration (it stays as it was), a stopped one by cold
   migration, confirmed once it arrived (there is nothing to verify in a stopped guest);
3. a server in another state (shelved, in error, resized and not confirmed) is reported, not touched.

One at a time, because every move copies a guest's memory and disk over the same links; the
host stays disabled whatever happens, so a second run picks up what the first one left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from yunstack.client.http import ApiError, YunClient

# 2.25: ``block_migration: "auto"`` (every disk here is local, so the cloud copies them).
MICROVERSION = {"OpenStack-API-Version": "compute 2.25"}


@dataclass(frozen=True, kw_only=True)
class Drained:
    """What became of one server of the drained host."""

    server_id: str
    name: str
    result: Literal["moved", "failed", "skipped"]
    host: str | None  # where it is now
    why: str = ""


def drain_host(client: YunClient, host: str, *, reason: str = "draining for maintenance (yun host drain)",
               timeout: float = 900.0, poll: float = 1.0, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> list[Drained]:
    """Disable ``host`` and move each of its servers elsewhere; what became of each one.

    ``timeout`` bounds each server's move.  Raises ``ApiError`` when the host is unknown or the
    caller may not do this (admins only, as the calls it makes).
    """
    client.request("PUT", "compute", "/os-services/disable-log-reason",
                   json={"host": host, "binary": "nova-compute", "disabled_reason": reason})
    servers = client.get("compute", "/servers/detail", params={"all_tenants": "1", "host": host})["servers"]
    results = []
    for server in sorted(servers, key=lambda s: str(s["name"])):
        results.append(_move(client, server, host, timeout=timeout, poll=poll, clock=clock, sleep=sleep))
    return results


def _move(client: YunClient, server: dict[str, Any], host: str, *, timeout: float, poll: float,
          clock: Callable[[], float], sleep: Callable[[float], None]) -> Drained:
    sid, name, status = str(server["id"]), str(server["name"]), str(server["status"])
    if status in ("ACTIVE", "PAUSED"):
        body: dict[str, Any] = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    elif status == "SHUTOFF":
        body = {"migrate": None}
    else:
        return Drained(server_id=sid, name=name, result="skipped", host=host,
                       why=f"{status}: only a running, paused or stopped server moves")
    try:
        accepted = client.request("POST", "compute", f"/servers/{sid}/action", headers=MICROVERSION, json=body)
    except ApiError as exc:
        return Drained(server_id=sid, name=name, result="failed", host=host, why=exc.message)
    deadline = clock() + timeout
    while True:
        now = client.get("compute", f"/servers/{sid}")["server"]
        where = now.get("OS-EXT-SRV-ATTR:host")
        if now.get("OS-EXT-STS:task_state") is None:
            if where != host and now["status"] == "VERIFY_RESIZE":
                # A stopped server arrived: keep it there (its old copy on the drained host goes).
                try:
                    accepted = client.request("POST", "compute", f"/servers/{sid}/action", headers=MICROVERSION,
                                              json={"confirmResize": None})
                except ApiError as exc:
                    return Drained(server_id=sid, name=name, result="failed", host=where, why=exc.message)
            elif where != host:
                return Drained(server_id=sid, name=name, result="moved", host=where)
            else:
                request_id = accepted.headers.get("x-openstack-request-id", "")
                return Drained(server_id=sid, name=name, result="failed", host=where,
                               why=_why(client, sid, request_id))
        if clock() >= deadline:
            return Drained(server_id=sid, name=name, result="failed", host=where,
                           why=f"still {now.get('OS-EXT-STS:task_state')} after {timeout:.0f}s")
        sleep(poll)


def _why(client: YunClient, server_id: str, request_id: str) -> str:
    """What the migration's failed events say (an admin sees each one's error), else a plain word."""
    try:
        action = client.get("compute", f"/servers/{server_id}/os-instance-actions/{request_id}")["instanceAction"]
    except ApiError:
        return "its migration did not complete"
    errors = [str(e.get("traceback") or e["event"]) for e in action.get("events", []) if e.get("result") == "Error"]
    return "; ".join(errors) or "its migration did not complete"


__all__ = ["Drained", "drain_host"]
