"""Evacuate: rebuild a server elsewhere when its host is down, after fencing that host off it.

A host whose agent stopped heartbeating may be dead, or only cut off from the control plane with
its guests still running.  Evacuate must be safe in both cases, so the control plane *fences* the
old host before the server is rebuilt anywhere else.  In the one transaction that checks the
source is down and claims the destination (under the scheduler lock):

- ``Instance.host`` moves to the destination.  Everything a host may do is scoped to the rows whose
  ``host`` is its own: its steps (the task table's claims), its reads of specs and images and
  its reports over ``/agent/v1`` (``HostAuthService.owns_instance``).  The old host loses all of it.
- The server records a fence epoch (``FENCE``: the id of the evacuate's instance action, which only
  grows).  An outcome for an operation recorded before the fence is refused by the agent link's
  finish, whatever link it comes through (``compute.agentlink``): a report that raced the move
  cannot overwrite the rebuilt server.
- When the old host comes back, its power sync reports the guests it still runs; the ones whose
  row is no longer on that host are returned as orphans, and its agent destroys their QEMU process
  and local files (``Agent._sync_power``).  Nothing else on it is touched.

The server is then rebuilt from its image on the destination (the ``rebuild`` host step: the
guest does not exist there, so it is spawned anew): local disks are lost, ports and addresses stay
(their binding moves), and it ends ACTIVE, or SHUTOFF if it was stopped, as Nova's evacuate.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, scheduler, states
from yunstack.compute.aggregates import follow_host
from yunstack.compute.operations.rebuild import ACCEPTED, ERROR, EVACUATION, FAILED
from yunstack.compute.servergroups import ServerGroupService
from yunstack.db import locks
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, Conflict, NotFound, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.network.service import NetworkService
from yunstack.protocol import RebuildArgs
from yunstack.types import new_uuid

FENCE = "yunstack:fence_action"  # system_metadata: outcomes of actions older than this one are refused
EVACUATED_FROM = "yunstack:evacuated_from"  # system_metadata: the host the server was last evacuated from
ALLOWED = states.allowed(states.ACTIVE, states.STOPPED, states.ERROR)  # nova.compute.api.evacuate


@dataclass(frozen=True, kw_only=True)
class Evacuate:
    """A validated evacuate request (the API layer parsed the wire format for its microversion)."""

    host: str | None = None
    admin_pass: str | None = None
    on_shared_storage: bool = False
    force: bool = False  # 2.29+: the named host is taken as is, without the scheduler's filters


def fenced(row: t.Instance, action_id: int | None) -> bool:
    """Whether an outcome of the instance action ``action_id`` comes from before the server's fence."""
    fence = (row.system_metadata or {}).get(FENCE)
    return fence is not None and action_id is not None and action_id < int(fence)


def record_migration(s: Session, row: t.Instance, source: str, dest: str, user_id: str, now: datetime, *,
                     status: str = ACCEPTED, error: str | None = None) -> str:
    """Write the evacuation's ``migrations`` row (os-migrations); returns its uuid.

    ``dest`` is "" when no host could take the server (status ``error``).  The row has no
    ``step``: the work is the ``rebuild`` step, which ends the row when it finishes.
    """
    flavor_id = str(row.flavor.get("id"))
    record = mig.Migration(uuid=new_uuid(), instance_uuid=row.id, project_id=row.project_id, user_id=user_id,
                           migration_type=EVACUATION, status=status, source_compute=source, dest_compute=dest,
                           old_flavor_id=flavor_id, new_flavor_id=flavor_id, block_migration=False, step=None,
                           rolling_back=False, error=error, created_at=now, updated_at=now)
    s.add(record)
    return record.uuid


class EvacuateOpsMixin:
    """Mixed into ``ComputeService``, which provides the attributes and helpers below."""

    _db: sessionmaker[Session]
    hosts: Any
    network: NetworkService | None
    notify: Callable[[str], None]

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        raise NotImplementedError

    def _hosts_for(self, s: Session) -> list[scheduler.HostState]:
        raise NotImplementedError

    def evacuate(self, ctx: AuthContext, server_id: str, req: Evacuate, request_id: str) -> str:
        """Fence the server's down host and rebuild the server on another; returns its new password.

        ``onSharedStorage`` (keep the disk) needs storage this cloud does not have: 400.  When no
        host fits, the server stays where it is with a fault that names each host and why (as
        Nova's conductor does after its 200).
        """
        with self._db() as s:
            row = self._row(s, ctx, server_id)  # another project's server is not there (404) ...
            policy.require_admin(ctx, "os_compute_api:os-evacuate")  # ... and only admins evacuate (403)
            source, volume_backed = row.host, not row.image_id
        if volume_backed:
            raise Conflict("Instance {id} boots from a volume kept on the storage host: evacuate rebuilds a "
                           "server from its image, which it has not.", id=server_id)
        if req.on_shared_storage:
            raise BadRequest("Instance disks are local to their host here (no shared storage): evacuate "
                             "rebuilds the server from its image, so onSharedStorage must be false.")
        if req.host is not None:
            with self._db() as s:
                if self.hosts.is_up(s, req.host) is None:
                    raise NotFound("Compute host {host} not found.", host=req.host)
            if req.host == source:
                raise BadRequest("The target host can't be the same one.")
        placed = self._fence_and_claim(ctx, server_id, req, request_id)
        if placed is None:
            return req.admin_pass or secrets.token_urlsafe(9)
        dest, migration_id = placed
        try:
            if self.network is not None:
                self.network.bind_instance_ports(ctx, server_id, dest)  # its ports (and IPs) move with it
        except YunError as exc:
            self._unclaim(server_id, dest, migration_id, exc.text)
            raise
        with self._db.begin() as s:
            fresh = s.get(t.Instance, server_id)
            if fresh is not None:
                args = RebuildArgs(image_id=fresh.image_id, keep_stopped=fresh.vm_state == states.STOPPED,
                                   migration_id=migration_id)
                operations.queue_step(s, fresh, args, request_id, task=states.REBUILDING,
                                      when=(t.Instance.host == dest, t.Instance.task_state == states.REBUILDING))
        self.notify(dest)
        return req.admin_pass or secrets.token_urlsafe(9)

    def _fence_and_claim(self, ctx: AuthContext, server_id: str, req: Evacuate,
                         request_id: str) -> tuple[str, str] | None:
        """Check the source is down, pick the destination and move the server there, in one transaction.

        Returns (the destination, the evacuation's migration uuid); None when no host fits.
        """
        with self._db() as s:
            locks.scheduler_lock(s)  # the claim is a create's: across API workers (db.locks)
            row = self._row(s, ctx, server_id)
            ALLOWED.check("evacuate", server_id, row.vm_state, row.task_state)
            source = row.host
            if source is None:
                raise Conflict("Cannot 'evacuate' instance {id}: it has no host", id=server_id)
            if self.hosts.is_up(s, source):
                raise BadRequest("Compute service of {host} is still in use.", host=source)
            flavor = row.flavor
            now = datetime.now(UTC)
            self._record(s, row, "evacuate", request_id, ctx)
            if req.host is not None and req.force:
                dest: str | None = req.host
                reasons: dict[str, str] = {}
            else:
                # As any move (Nova's request spec): the zone asked for at create, the server's group.
                group_policy, group_hosts = ServerGroupService.for_move(s, row.id)
                spec = scheduler.RequestSpec(vcpus=int(flavor["vcpus"]), memory_mib=int(flavor["ram"]),
                                             disk_gb=int(flavor.get("disk", 0)), ignore_hosts=frozenset({source}),
                                             force_host=req.host, availability_zone=row.requested_availability_zone,
                                             group_policy=group_policy, group_hosts=group_hosts)
                decision = scheduler.select(self._hosts_for(s), spec)
                dest, reasons = decision.host, decision.reasons
            if dest is None:
                s.flush()
                why = self._no_host(s, row, request_id, reasons, now)
                record_migration(s, row, source, "", ctx.user.id, now, status=ERROR, error=why)
                s.commit()
                return None
            s.flush()
            action_id = s.scalar(select(func.max(t.InstanceAction.id)).where(
                t.InstanceAction.instance_id == row.id, t.InstanceAction.request_id == request_id))
            # The fence: the old host's claim ends here (its queue, its reads and reports), and any
            # outcome of work recorded before this action is refused from now on.
            row.host = dest
            follow_host(row)
            operations.end_work(s, row, f"the server was evacuated from {source} (its host is down)")
            row.task_state = states.REBUILDING
            row.fault = None
            row.updated_at = now
            row.system_metadata = {**(row.system_metadata or {}), FENCE: action_id, EVACUATED_FROM: source}
            migration_id = record_migration(s, row, source, dest, ctx.user.id, now)
            s.commit()
            return dest, migration_id

    @staticmethod
    def _no_host(s: Session, row: t.Instance, request_id: str, reasons: dict[str, str], now: datetime) -> str:
        """As Nova's conductor after its 200: the action fails, saying why each host was refused.

        The server is left as it was (on its down host, in its state), so it can be evacuated again
        once a host fits; the fault is kept for when it is shown (an ERROR server's view).
        """
        detail = "; ".join(f"{h}: {why}" for h, why in sorted(reasons.items())) or "There are no other hosts."
        why = f"No valid host was found. {detail}"
        row.fault = {"code": 500, "message": "No valid host was found.", "details": detail,
                     "created": now.isoformat()}
        row.updated_at = now
        action = s.scalar(select(t.InstanceAction).where(t.InstanceAction.instance_id == row.id,
                                                         t.InstanceAction.request_id == request_id))
        if action is not None:
            action.message, action.finish_time, action.updated_at = "Error", now, now
            s.add(t.InstanceActionEvent(action_id=action.id, event="conductor_rebuild_server", host=None,
                                        result="Error", traceback=why, start_time=now, finish_time=now))
        return why

    def _unclaim(self, server_id: str, dest: str, migration_id: str, why: str) -> None:
        """The ports could not move: the server goes back to its (down) host, fence kept, no task."""
        now = datetime.now(UTC)
        with self._db.begin() as s:
            row = s.get(t.Instance, server_id)
            if row is not None and row.host == dest and row.task_state == states.REBUILDING:
                row.host = (row.system_metadata or {}).get(EVACUATED_FROM, row.host)
                follow_host(row)
                row.task_state = None
                row.updated_at = now
            record = s.scalar(select(mig.Migration).where(mig.Migration.uuid == migration_id))
            if record is not None:
                record.status, record.error, record.updated_at = FAILED, why, now


__all__ = ["EVACUATED_FROM", "FENCE", "Evacuate", "EvacuateOpsMixin", "fenced", "record_migration"]
