"""The later Nova server actions: lock/unlock, rebuild, rescue/unrescue, shelve/shelveOffload/unshelve.

Each use case checks policy, the lock and the operation's allowed states (``ComputeService._begin``),
changes the instance and queues the host's step (``operations.queue_step``) in one transaction.
What each operation allows, shows and finishes is declared in ``compute.operations`` (rebuild,
rescue, shelve); the host's side is ``agent.steps.lifecycle``.

Shelving has two host steps (``shelve``: stop and snapshot, then ``shelve_offload``: the guest
and its files leave the host), each its own queued work, so a control-plane restart between them
resumes at the step that did not finish.  An offloaded server has no host: its claim is released,
its ports stay (unbound) and ``unshelve`` schedules it again and spawns it from the shelve image.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, scheduler, states
from yunstack.compute.aggregates import follow_host
from yunstack.compute.hosts import HostService
from yunstack.compute.models import Server
from yunstack.compute.operations import Operation
from yunstack.compute.operations.shelve import SHELVED_AT, SHELVED_HOST, SHELVED_IMAGE, shelved_image
from yunstack.db import locks
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Conflict, Forbidden, NotFound, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.network.service import NetworkService
from yunstack.protocol import (
    RebuildArgs,
    RescueArgs,
    ShelveArgs,
    StepArgs,
    UnshelveArgs,
)

__all__ = ["SHELVED_AT", "SHELVED_HOST", "SHELVED_IMAGE", "LifecycleOpsMixin", "Rebuild", "shelved_image"]

@dataclass(frozen=True, kw_only=True)
class Rebuild:
    """A validated rebuild request (the API layer parsed the wire format)."""

    image_id: str
    name: str | None = None
    metadata: Mapping[str, str] | None = None
    access_ipv4: str | None = None
    access_ipv6: str | None = None
    description: str | None = None
    clear_description: bool = False
    admin_pass: str | None = None
    preserve_ephemeral: bool = False


class LifecycleOpsMixin:
    """Mixed into ``ComputeService``, which provides the attributes and helpers below."""

    _db: sessionmaker[Session]
    images: Any
    hosts: HostService
    network: NetworkService | None
    notify: Callable[[str], None]

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        raise NotImplementedError

    def _hosts_for(self, s: Session) -> list[scheduler.HostState]:
        return self.hosts.scheduling(s)

    def _addresses(self, rows: Sequence[t.Instance]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        raise NotImplementedError

    # -- lock ------------------------------------------------------------------------------------

    def lock(self, ctx: AuthContext, server_id: str, request_id: str, reason: str | None = None) -> None:
        """Lock the server: non-admins may then change nothing about it (Nova's check_instance_lock)."""
        policy.require_write(ctx, "compute:servers:lock")
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            row.locked = True
            # Nova: "owner" when the server's own project locks it, "admin" when another does.
            row.locked_by = "owner" if ctx.project_id == row.project_id else "admin"
            row.locked_reason = reason
            row.updated_at = datetime.now(UTC)
            self._record(s, row, "lock", request_id, ctx)

    def unlock(self, ctx: AuthContext, server_id: str, request_id: str) -> None:
        """Unlock; a lock an admin set from another project only an admin lifts (unlock_override)."""
        policy.require_write(ctx, "compute:servers:unlock")
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            expected = "owner" if ctx.project_id == row.project_id else "admin"
            if row.locked_by and row.locked_by != expected and not ctx.is_admin:
                raise Forbidden(action="os_compute_api:os-lock-server:unlock:unlock_override")
            row.locked, row.locked_by, row.locked_reason = False, None, None
            row.updated_at = datetime.now(UTC)
            self._record(s, row, "unlock", request_id, ctx)

    # -- the queue -------------------------------------------------------------------------------

    def _begin(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> tuple[t.Instance, Operation]:
        raise NotImplementedError

    def _queue_action(self, s: Session, ctx: AuthContext, row: t.Instance, decl: Operation, args: StepArgs,
                      request_id: str) -> None:
        raise NotImplementedError

    def _enqueue(self, s: Session, ctx: AuthContext, row: t.Instance, decl: Operation, args: StepArgs,
                 request_id: str) -> None:
        if row.host is None:
            raise Conflict("Cannot '{action}' instance {id}: it has no host", action=decl.action, id=row.id)
        self._queue_action(s, ctx, row, decl, args, request_id)

    def _image_for(self, ctx: AuthContext, image_id: str, what: str) -> Any:
        try:
            image, _path = self.images.get_for_boot(ctx, image_id)
        except NotFound as exc:
            raise BadRequest("Cannot find image for {what}", what=what) from exc
        return image

    # -- rebuild ---------------------------------------------------------------------------------

    def rebuild(self, ctx: AuthContext, server_id: str, req: Rebuild, request_id: str) -> Server:
        """Re-image the server: a new root disk from ``req.image_id``; returns it with its password."""
        _check_metadata(req.metadata or {})
        with self._db() as s:
            flavor = dict(self._row(s, ctx, server_id).flavor)
        image = self._image_for(ctx, req.image_id, "rebuild")
        size_gb = ((image.virtual_size or image.size or 0) + (1 << 30) - 1) >> 30
        if flavor.get("disk") and max(size_gb, image.min_disk or 0) > int(flavor["disk"]):
            raise BadRequest("Flavor's disk is too small for requested image.")
        if image.min_ram and int(flavor.get("ram", 0)) < image.min_ram:
            raise BadRequest("Flavor's memory is too small for requested image.")
        from yunstack.compute.service import to_server  # late: that module mixes this class in

        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, "rebuild")
            args = RebuildArgs(image_id=image.id, keep_stopped=row.vm_state == states.STOPPED,
                               preserve_ephemeral=req.preserve_ephemeral)
            self._enqueue(s, ctx, row, decl, args, request_id)
            row.image_id = image.id
            if req.name is not None:
                row.name = req.name
            if req.metadata is not None:
                row.meta = {str(k): str(v) for k, v in req.metadata.items()}
            if req.access_ipv4 is not None:
                row.access_ipv4 = req.access_ipv4
            if req.access_ipv6 is not None:
                row.access_ipv6 = req.access_ipv6
            if req.description is not None or req.clear_description:
                row.description = req.description
            row.fault = None
            host = row.host
            s.flush()
            server = to_server(row)  # as the request left it (REBUILD), whatever the agent does next
        assert host is not None
        self.notify(host)
        addresses = self._addresses([row]).get(server_id) or {}
        return replace(server, addresses=addresses, admin_pass=req.admin_pass or secrets.token_urlsafe(9))

    # -- rescue ----------------------------------------------------------------------------------

    def rescue(self, ctx: AuthContext, server_id: str, request_id: str, *, admin_pass: str | None = None,
               rescue_image_ref: str | None = None) -> str:
        """Boot the server from a rescue image with its own disk attached second; returns the password."""
        with self._db() as s:
            self._begin(s, ctx, server_id, "rescue")  # the states (and a volume-backed server) first
            image_id = rescue_image_ref or self._row(s, ctx, server_id).image_id
        image = self._image_for(ctx, image_id, "rescue")
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, "rescue")
            self._enqueue(s, ctx, row, decl, RescueArgs(image_id=image.id), request_id)
            host = row.host
        assert host is not None
        self.notify(host)
        return admin_pass or secrets.token_urlsafe(9)

    # -- shelve ----------------------------------------------------------------------------------

    def shelve(self, ctx: AuthContext, server_id: str, request_id: str) -> None:
        """Stop the server and snapshot it to ``<name>-shelved``; the agent then offloads it."""
        with self._db() as s:
            probe, _ = self._begin(s, ctx, server_id, "shelve")
            name, flavor, base, project = probe.name, dict(probe.flavor), probe.image_id, probe.project_id
        props = {"instance_uuid": server_id, "image_type": "snapshot", "base_image_ref": base,
                 "owner_user_name": ctx.user.name, "user_id": ctx.user.id}
        # Created now (queued) as for createImage; the agent uploads the stopped guest's disk into it.
        image = self.images.create(ctx, name=f"{name}-shelved", disk_format="qcow2", container_format="bare",
                                   visibility="private", min_disk=int(flavor.get("disk", 0)),
                                   min_ram=int(flavor.get("ram", 0)), properties=props, owner=project)
        try:
            with self._db.begin() as s:
                row, decl = self._begin(s, ctx, server_id, "shelve")
                self._enqueue(s, ctx, row, decl, ShelveArgs(image_id=image.id, offload=True), request_id)
                row.system_metadata = {**(row.system_metadata or {}), SHELVED_IMAGE: image.id,
                                       SHELVED_AT: datetime.now(UTC).isoformat(), SHELVED_HOST: row.host}
                host = row.host
        except YunError:
            with contextlib.suppress(YunError):
                self.images.delete(ctx, image.id)  # nothing half-made
            raise
        assert host is not None
        self.notify(host)

    def unshelve(self, ctx: AuthContext, server_id: str, request_id: str) -> None:
        """Bring a shelved server back: on its host if it is still there, else on a host chosen now."""
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, "unshelve")
            if row.vm_state == states.SHELVED:
                # Not offloaded yet: the stopped guest is still on its host; just start it.
                self._enqueue(s, ctx, row, decl, UnshelveArgs(image_id=shelved_image(row), on_host=True),
                              request_id)
                host = row.host
            else:
                host = None
        if host is not None:
            self.notify(host)
            return
        self._unshelve_offloaded(ctx, server_id, request_id)

    def _unshelve_offloaded(self, ctx: AuthContext, server_id: str, request_id: str) -> None:
        with self._db.begin() as s:
            locks.scheduler_lock(s)  # a claim, as a create's: across API workers (db.locks)
            row, _ = self._begin(s, ctx, server_id, "unshelve")
            image_id = shelved_image(row)
            if not image_id:
                raise Conflict("Instance {id} has no shelved image to unshelve from", id=server_id)
            flavor = row.flavor
            spec = scheduler.RequestSpec(vcpus=int(flavor["vcpus"]), memory_mib=int(flavor["ram"]),
                                         disk_gb=int(flavor.get("disk", 0)),
                                         availability_zone=row.requested_availability_zone)
            decision = scheduler.select(self._hosts_for(s), spec)
            self._record(s, row, "unshelve", request_id, ctx)
            if decision.host is None:
                # As Nova's conductor: the server stays offloaded, the action says why.
                now = datetime.now(UTC)
                detail = "; ".join(f"{h}: {why}" for h, why in sorted(decision.reasons.items()))
                row.fault = {"code": 500, "message": "No valid host was found.", "details": detail,
                             "created": now.isoformat()}
                s.flush()
                _fail_action(s, row.id, request_id, now)
                return
            row.host = decision.host
            follow_host(row)
            row.task_state = states.UNSHELVING
            row.updated_at = datetime.now(UTC)
            host = decision.host
        # Ports come back to the new host before the spawn is queued (the agent plugs them).
        try:
            if self.network is not None:
                self.network.bind_instance_ports(ctx, server_id, host)
        except YunError:
            with self._db.begin() as s:
                fresh = s.get(t.Instance, server_id)
                if fresh is not None:
                    fresh.host, fresh.task_state = None, None
            raise
        with self._db.begin() as s:
            fresh = s.get(t.Instance, server_id)
            if fresh is not None:
                operations.queue_step(s, fresh, UnshelveArgs(image_id=image_id, on_host=False), request_id,
                                      task=states.UNSHELVING)
        self.notify(host)



def _check_metadata(items: Mapping[str, Any]) -> None:
    for key, value in items.items():
        if not key or len(key) > 255 or len(str(value)) > 255:
            raise BadRequest("Invalid metadata: keys must be 1-255 and values 0-255 characters.")


def _fail_action(s: Session, instance_id: str, request_id: str, now: datetime) -> None:
    action = s.scalar(select(t.InstanceAction).where(t.InstanceAction.instance_id == instance_id,
                                                     t.InstanceAction.request_id == request_id)
                      .order_by(t.InstanceAction.id.desc()))
    if action is not None:
        action.message, action.finish_time, action.updated_at = "Error", now, now
        s.add(t.InstanceActionEvent(action_id=action.id, event="schedule_instances", host=None, result="Error",
                                    traceback="No valid host was found.", start_time=now, finish_time=now))
