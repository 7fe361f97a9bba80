"""``LocalControlPlane``: the agent's interface implemented in-process against the services.

This is the control-plane side of ``agent.link.ControlPlane``: it reads queued work and applies
outcomes in transactions, records faults and instance-action events, and reconciles power states
that the agent observed (a guest whose process died becomes SHUTOFF with the reason recorded).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.agent.link import Answer, ConsoleSocket, Wakeup, work_key
from yunstack.compute import operations, states
from yunstack.compute.driver import HostInfo, InstanceInfo, PowerState
from yunstack.compute.evacuate import fenced
from yunstack.compute.hostcalls import HostHub
from yunstack.compute.hosts import HostService
from yunstack.compute.inflight import CreatesInFlight
from yunstack.compute.memoryledger import MemoryLedgerService
from yunstack.compute.operations import Later
from yunstack.config import Config
from yunstack.db.tables import compute as t
from yunstack.db.tables import identity as ident
from yunstack.db.tables import migrations as mig
from yunstack.db.tables import tasks as tt
from yunstack.errors import Conflict, NotFound, YunError
from yunstack.identity.context import system_context
from yunstack.identity.service import PAGE_SHARING
from yunstack.memory.model import EXTRA_MEMORY_TEMPLATE, EXTRA_PAGE_SHARING, IMAGE_MEMORY_TEMPLATE
from yunstack.network.desired import HostNetworkState
from yunstack.network.service import NetworkService
from yunstack.protocol import ConfigDriveData, NbdConnection, Outcome, SpecData, SpecVolume, Work
from yunstack.tasks.model import Claim, Expiry, TaskState
from yunstack.tasks.service import TaskService
from yunstack.volume import attachments
from yunstack.volume.service import VolumeService

log = logging.getLogger(__name__)

RANDOM_SEED_BYTES = 512  # as Nova's metadata


def meta_data(row: t.Instance) -> dict[str, Any]:
    """OpenStack ``meta_data.json`` for the config drive."""
    data: dict[str, Any] = {
        "uuid": row.id, "name": row.name, "hostname": row.hostname, "launch_index": row.launch_index,
        "availability_zone": row.availability_zone, "project_id": row.project_id,
        "meta": dict(row.meta or {}), "devices": [],
        # Nova's seed for the guest's kernel RNG, new for every drive: a guest started from a memory
        # template has the template's RNG state until it mixes this in.
        "random_seed": base64.b64encode(os.urandom(RANDOM_SEED_BYTES)).decode(),
    }
    if row.key_name and row.key_data:
        data["public_keys"] = {row.key_name: row.key_data}
        data["keys"] = [{"name": row.key_name, "type": "ssh", "data": row.key_data}]
    return data


# A create commits its rows, then allocates ports, then queues the spawn.  A crash in between leaves
# a BUILD row with no work; after this long without that work, the sync calls the create interrupted.
INTERRUPTED_CREATE_AFTER = timedelta(seconds=10)
CLAIM_BATCH = 32  # steps one poll may claim for a host (a burst of creates arrives in a few polls)
INTERRUPTED_CREATE = ("The create was interrupted (the control plane stopped) before the server's build was "
                      "queued; nothing was started. Delete the server and create it again.")


# Server steps whose report can end a volume's attachment (and with it an export across hosts).
_ENDS_ATTACHMENTS = frozenset({"attach_volume", "detach_volume", "delete"})


def _work(claim: Claim) -> Work:
    return Work(instance_id=claim.resource.id, request_id=claim.request_id or "", args=claim.args,
                task_id=claim.id, attempt=claim.attempt,
                resource_type="volume" if claim.resource.type == "volume" else "server")


def _interrupted_create(row: t.Instance, busy: Collection[str], now: datetime, queued: bool,
                        creating: Container[str]) -> bool:
    """A build with no work for a while, that no agent runs and no create of this process still
    makes (a slow create is not a stopped one; another process's is judged by the time alone)."""
    return (row.vm_state == states.BUILDING and row.task_state == states.SPAWNING and not queued
            and row.id not in busy and row.updated_at <= now - INTERRUPTED_CREATE_AFTER
            and row.id not in creating)


class LocalControlPlane:
    def __init__(self, db: sessionmaker[Session], config: Config, hosts: HostService, images: Any,
                 ledger: MemoryLedgerService, network: NetworkService | None = None,
                 hub: HostHub | None = None, tasks: TaskService | None = None,
                 creating: CreatesInFlight | None = None, volumes: VolumeService | None = None) -> None:
        self.hub = hub or HostHub()
        self._volumes = volumes  # a volume step's report is the volume service's to apply
        self._creating = creating or CreatesInFlight()  # this process's creates still running
        self._db = db
        self.tasks = tasks or TaskService(db)
        self._owners: dict[str, str] = {}  # host -> the agent (lease owner) that polled last
        self._ledger = ledger
        self._network = network
        self._config = config
        self._hosts = hosts
        self._images = images

    def pending_work(self, host: str) -> Sequence[Work]:
        with self._db() as s:
            return operations.waiting(s, host)

    def wait(self, host: str, busy: Collection[str], timeout: float, owner: str = "") -> Wakeup:
        woken = threading.Event()
        unsubscribe = self.hub.subscribe(host, woken.set)  # before looking: a wake in between is kept
        deadline = time.monotonic() + min(max(0.0, timeout), self._hosts.longest_wait)
        try:
            found = self.first_look(host, busy, owner)
            while True:
                left = deadline - time.monotonic()
                if found.work or found.calls or found.network or left <= 0 or self.hub.closing:
                    return found
                if not woken.wait(left):
                    return found  # nothing came: the agent's next wait, at once, looks again
                # Cleared before the look, not after: a wake that comes while we look is kept.
                woken.clear()
                found = self.poll(host, busy, owner)
        finally:
            unsubscribe()

    def first_look(self, host: str, busy: Collection[str], owner: str = "") -> Wakeup:
        """A wait's start: ``hold``, then ``poll`` with what it hands out again.

        An idle host (nothing running, nothing held, nothing queued, the same agent as before) is
        answered from one read: that is most long-polls of a large cloud.
        """
        owner = owner or host
        if not busy and self._owners.get(host) == owner and self.tasks.outstanding(host, owner) == (False, False):
            self._hosts.seen(host)
            return Wakeup(calls=self.hub.take_calls(host), network=self.hub.take_network(host))
        return self.poll(host, busy, owner, self.hold(host, busy, owner))

    def hold(self, host: str, busy: Collection[str], owner: str = "") -> tuple[Work, ...]:
        """What a wait says before it waits: the agent ``owner`` of ``host`` is alive and still runs ``busy``.

        Their leases are extended.  An agent the control plane has not heard from before (a
        restarted one: a new owner name) gets its predecessor's steps back at once instead of
        after their leases: they are queued again (or fail, out of attempts).  Returns the steps
        ``owner`` holds but does not list: their first hand-out was lost on the way (a long-poll
        cut off), so they come again (the agent drops a copy of one that crossed its report).
        """
        owner = owner or host
        self._hosts.seen(host)  # a wait is the agent's sign of life (``HostService.seen``)
        if self._owners.get(host) != owner:
            # The new owner first: a claim by the old run that commits after the release below
            # sees it (``poll``'s second check) and hands its take back.
            self._owners[host] = owner
            self._ended(self.tasks.release(host, keep_owner=owner))
        self.tasks.renew_held(host, owner, busy, lease_seconds=self._config.compute.task_lease_seconds)
        return tuple(_work(c) for c in self.tasks.held(host, owner, besides=busy))

    def poll(self, host: str, busy: Collection[str], owner: str = "", again: Sequence[Work] = ()) -> Wakeup:
        """``wait`` without waiting: claim ``host``'s claimable steps (leased to ``owner``), and its reads.

        ``again``: what ``hold`` found to hand out again, handed out with them.
        """
        owner = owner or host
        if self._stale(host, owner):
            return Wakeup()
        claims = self.tasks.claim(host, limit=CLAIM_BATCH, owner=owner,
                                  lease_seconds=self._config.compute.task_lease_seconds)
        if claims and self._stale(host, owner):
            # A new run of the agent came up while we claimed: what we took is its work.
            self._ended(self.tasks.release(host, keep_owner=self._owners[host]))
            self.hub.wake(host)
            return Wakeup()
        work = (*again, *(_work(c) for c in claims))
        return Wakeup(work=tuple(w for w in work if work_key(w) not in busy), calls=self.hub.take_calls(host),
                      network=self.hub.take_network(host))

    def _stale(self, host: str, owner: str) -> bool:
        """Whether ``owner`` is an older run of ``host``'s agent than the one heard from last.

        Its long-poll may outlive it on this side (a killed agent's request runs to its timeout):
        such a poll must claim nothing, or its dead run would hold the new run's work for a lease.
        """
        return self._owners.get(host, owner) != owner

    def sweep(self) -> None:
        """The lease sweep: steps whose host stopped renewing them run again, or fail with the reason.

        The control plane calls it periodically (``server.serve``); a step that failed this way
        ends its operation as if the host had reported the failure.
        """
        self._ended(self.tasks.expire())

    def _ended(self, swept: Sequence[Expiry]) -> None:
        for host in {e.host for e in swept if e.state == TaskState.QUEUED and e.host}:
            self.hub.wake(host)  # its agent takes the step up again now, not at its next poll
        for expiry in swept:
            if expiry.state != TaskState.FAILED:
                continue
            with self._db() as s:
                task = s.scalar(select(tt.Task).where(tt.Task.id == expiry.id))
                if task is None or task.step is None:
                    continue
                kind = task.resource_type
                outcome = Outcome(instance_id=task.resource_id, op=task.step, request_id=task.request_id or "",
                                  power_state=int(PowerState.NOSTATE), error=expiry.reason, task_id=task.id,
                                  attempt=task.attempt, resource_type="volume" if kind == "volume" else "server")
            log.warning("%s of %s ended without its host: %s", outcome.op, outcome.instance_id, expiry.reason)
            if kind == "volume" and self._volumes is not None:
                self._volumes.finish(outcome, swept=True)
            elif kind == operations.queue.SERVER:
                self._apply(outcome, swept=True)

    def answer(self, host: str, answer: Answer) -> None:
        self.hub.answer(host, answer)

    def open_console(self, session: str) -> ConsoleSocket:
        # The relay is two websockets meeting in the API; an in-process agent has no websocket.
        raise Conflict("A serial console relay needs the agent protocol over HTTP (yun agent).")

    def spec(self, instance_id: str) -> SpecData:
        with self._db() as s:
            row = s.get(t.Instance, instance_id)
            if row is None:
                raise NotFound("Instance {id} could not be found.", id=instance_id)
            user_data = base64.b64decode(row.user_data) if row.user_data else None
            drive = ConfigDriveData(meta_data=meta_data(row), user_data=user_data,
                                    network_data={"links": [], "networks": [], "services": []})
            flavor = row.flavor
            extra = {str(k): str(v) for k, v in (flavor.get("extra_specs") or {}).items()}
            project = s.get(ident.Project, row.project_id)
            if project is not None and (project.options or {}).get(PAGE_SHARING) is False:
                extra[EXTRA_PAGE_SHARING] = "off"
            # The image's property, recorded at create as Nova records image_* facts; the flavor's wins.
            image_template = (row.system_metadata or {}).get(IMAGE_MEMORY_TEMPLATE)
            if image_template is not None:
                extra.setdefault(EXTRA_MEMORY_TEMPLATE, str(image_template))
            ports: tuple[str, ...] = ()
            if self._network is not None:
                found = self._network.list_ports(system_context(row.project_id), device_ids=[row.id])
                ports = tuple(p.id for p in sorted(found, key=lambda p: p.created_at))
            volumes = tuple(SpecVolume(volume_id=a.volume_id, boot_index=a.boot_index, read_only=a.mode == "ro",
                                       nbd=NbdConnection.model_validate(a.connection) if a.connection else None)
                            for a in attachments.at_boot(s, row.id, building=row.vm_state == states.BUILDING))
            return SpecData(id=row.id, name=row.name, hostname=row.hostname, vcpus=int(flavor["vcpus"]),
                            memory_mib=int(flavor["ram"]), disk_gib=int(flavor.get("disk", 0)),
                            image_id=row.image_id, config_drive=drive if row.config_drive else None,
                            extra=extra, port_ids=ports, volumes=volumes)

    def fetch_image(self, image_id: str, dest: Path) -> str:
        disk_format, chunks = self.image_data(image_id)
        with dest.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        return disk_format

    def image_data(self, image_id: str) -> tuple[str, Iterator[bytes]]:
        """An image's disk format and bytes (the HTTP route streams them to a remote agent)."""
        # The agent reads any image an instance on its host was allowed to boot from.
        image, chunks = self._images.download(system_context(""), image_id)
        if chunks is None:
            raise NotFound("Image {id} has no data.", id=image_id)
        return str(image.disk_format or "raw"), chunks

    def upload_snapshot(self, instance_id: str, image_id: str, path: Path) -> None:
        """A snapshot's or shelve's disk, or a volume's bytes (``instance_id`` the volume's id), into its image."""
        with self._db() as s:
            row = s.get(t.Instance, instance_id)
            project = row.project_id if row else ""
        if row is None and self._volumes is not None:
            project = self._volumes.project_of(instance_id) or ""
        self._images.upload_local(system_context(project), image_id, path)

    def finish(self, outcome: Outcome) -> None:
        if outcome.resource_type == "volume":
            if self._volumes is None:
                raise NotFound("This control plane keeps no volumes.")
            self._volumes.finish(outcome)
            return
        self._apply(outcome)

    def _apply(self, outcome: Outcome, *, swept: bool = False) -> None:
        later = self._finish(outcome, swept=swept)
        if outcome.op in _ENDS_ATTACHMENTS and self._volumes is not None:
            # An attachment across hosts that ended queued the end of its export: the storage host hears now.
            self.hub.wake(self._config.storage_host)
        # Other services' writes happen after our transaction: on SQLite a second writer inside an
        # open write transaction would wait for the lock we hold.
        if later.deleted is not None and self._network is not None:
            # The guest is gone: free its ports (and with them its addresses) for good.
            self._network.deallocate_for_instance(system_context(later.deleted[1]), later.deleted[0])
        if later.released_port is not None and self._network is not None:
            # The guest let go of the NIC (or a failed attach never plugged it): release the port.
            instance_id, project_id, port_id = later.released_port
            with contextlib.suppress(NotFound):
                self._network.detach_interface(system_context(project_id), instance_id, port_id)
        if later.unbound is not None and self._network is not None:
            # Offloaded: its ports stay the server's but no host plugs them until it is unshelved.
            self._network.bind_instance_ports(system_context(later.unbound[1]), later.unbound[0], "")
        if later.rebound is not None and self._network is not None:
            # Moved: the port binding follows the guest, so the new host's dataplane plugs its taps.
            self._network.bind_instance_ports(system_context(later.rebound[1]), later.rebound[0], later.rebound[2])
        if later.doomed_volumes and self._volumes is not None:
            # The server went with delete_on_termination volumes: they go too (their own steps).
            self._volumes.delete_with_server(later.doomed_volumes)
        if later.abandoned_image is not None:
            # A snapshot that failed must not leave a queued image behind.
            with contextlib.suppress(YunError):
                self._images.delete(system_context(later.abandoned_image[1]), later.abandoned_image[0])
        if later.wake is not None:
            # The next step is another host's (a migration's other side): wake it now that it is
            # committed, and after the ports moved, so that its network state already has them.
            self.hub.wake(later.wake)

    def _finish(self, outcome: Outcome, *, swept: bool = False) -> Later:
        """Apply a host's report: the operation's declaration decides the states and what else changes.

        The step's task ends in the same transaction.  A report of a step that is no longer
        running in that attempt (its lease ran out and it was queued again, or another host
        took over) changes nothing: the run that holds it now reports.  ``swept``: the lease
        sweep already failed the task, and this is its failure applied.
        """
        now = datetime.now(UTC)
        decl = operations.REGISTRY.get(outcome.op)
        with self._db.begin() as s:
            row = s.get(t.Instance, outcome.instance_id)
            if row is None:
                return Later()
            if swept:
                ended = operations.current(s, row.id, outcome.task_id, ended_too=True)
                step: operations.Queued | None = None
                args = None if ended is None else ended.args
                # Nobody saw the guest: its power state is what was last known of it.
                outcome = outcome.model_copy(update={"power_state": row.power_state})
            else:
                step = operations.current(s, row.id, outcome.task_id)
                if step is None or not step.running or step.attempt != outcome.attempt or step.op != outcome.op:
                    log.warning("ignored a report of %s of %s (task %s, attempt %d): that run no longer "
                                "holds the step", outcome.op, row.id, outcome.task_id or "?", outcome.attempt)
                    return Later()
                args = step.args
            action = self._action(s, row, outcome)
            if fenced(row, None if action is None else action.id):
                # Work from before the server was evacuated: its old host was fenced off it.
                log.warning("refused %s of %s: it predates the server's evacuation", outcome.op, row.id)
                return Later()
            self._event(s, row, action, outcome, now)
            if decl is None:
                log.error("a host reported an unknown operation %s for %s", outcome.op, row.id)
                return Later()
            if step is not None:
                if outcome.error is None:
                    self.tasks.complete(step.task_id, attempt=step.attempt, s=s)
                else:
                    self.tasks.fail(step.task_id, outcome.error[:1000], attempt=step.attempt, s=s)
            # Read before the row changes, so that its changes go out in one UPDATE (a read
            # flushes what is pending first).
            pending = operations.queued(row)
            row.vm_state = decl.vm_state_after(outcome, args)
            row.power_state = outcome.power_state
            if pending is None:
                row.task_state = None
            # else: other work (a delete) was queued while this ran; it stays queued, with its task.
            row.updated_at = now
            if outcome.error is not None:
                row.fault = {"code": 500, "message": outcome.error[:255], "details": outcome.error,
                             "created": now.isoformat()}
            elif decl.launches:
                row.launched_at = now
                row.progress = 100
                row.fault = None
            later = decl.apply(row, outcome, args, now)
            if later.then is not None and pending is None:
                nxt = operations.operation(later.then.op)
                host = nxt.host_for(later.then)
                operations.queue_step(s, row, later.then, outcome.request_id, task=nxt.task_state(later.then),
                                      host=host)
                if host is not None:
                    later = dataclasses.replace(later, wake=host)
            return later

    def progress(self, instance_id: str, request_id: str, task_state: str) -> None:
        with self._db.begin() as s:
            row = s.get(t.Instance, instance_id)
            step = operations.queued(row) if row is not None else None
            if row is None or step is None or step.request_id != request_id or not step.running:
                return  # the work changed (a delete was queued): its task state stays
            decl = operations.REGISTRY.get(step.op)
            if decl is None or task_state not in decl.progress:
                log.warning("%s reported step %s, which %s does not declare", instance_id, task_state, step.op)
                return
            row.task_state = task_state  # each declared step is shown as the task state of its name
            row.updated_at = datetime.now(UTC)

    def network_state(self, host: str, tunnel_ip: str = "") -> HostNetworkState:
        if self._network is None:
            return HostNetworkState(host=host)
        self._network.report_tunnel(host, tunnel_ip)
        with self._db() as s:
            # Servers moving here: their taps must exist before the incoming guest starts.
            incoming = list(s.scalars(select(mig.Migration.instance_uuid).join(
                t.Instance, t.Instance.id == mig.Migration.instance_uuid).where(
                mig.arriving(), mig.Migration.dest_compute == host)))
        return self._network.host_state(host, incoming)

    @staticmethod
    def _action(s: Session, row: t.Instance, outcome: Outcome) -> t.InstanceAction | None:
        """The instance action of the request that ``outcome`` reports on, if it was recorded."""
        return s.scalar(select(t.InstanceAction).where(t.InstanceAction.instance_id == row.id,
                                                       t.InstanceAction.request_id == outcome.request_id)
                        .order_by(t.InstanceAction.id.desc()))

    def _event(self, s: Session, row: t.Instance, action: t.InstanceAction | None, outcome: Outcome,
               now: datetime) -> None:
        if action is None:
            return
        action.finish_time = now
        action.updated_at = now
        if outcome.error is not None:
            action.message = "Error"
        decl = operations.REGISTRY.get(outcome.op)
        s.add(t.InstanceActionEvent(action_id=action.id, event=decl.event if decl else outcome.op,
                                    host=row.host, result="Error" if outcome.error else "Success",
                                    traceback=outcome.error, start_time=action.start_time, finish_time=now))

    def sync_power(self, host: str, infos: Sequence[InstanceInfo], busy: Collection[str]) -> Sequence[str]:
        seen = {i.id: i for i in infos}
        now = datetime.now(UTC)
        interrupted: list[tuple[str, str]] = []
        with self._db.begin() as s:
            rows = {r.id: r for r in s.scalars(select(t.Instance).where(t.Instance.host == host))}
            working = operations.busy(s, [i for i, r in rows.items() if r.vm_state != states.DELETED])
            for row in rows.values():
                if _interrupted_create(row, busy, now, row.id in working, self._creating):
                    if self._interrupt(s, row, now):
                        interrupted.append((row.id, row.project_id))
                    continue
                if row.id in working or row.task_state is not None or row.id in busy:
                    continue  # an operation owns this instance right now
                info = seen.get(row.id)
                if info is None:
                    if row.vm_state in (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED):
                        self._lost(s, row, "The guest's files are gone from host " + host, now)
                    continue
                if info.migration is not None:
                    continue  # a live migration's guest (stopped on the source by it): the migration's
                observed = int(info.power_state)
                if observed == row.power_state:
                    continue
                row.power_state = observed
                row.updated_at = now
                if row.vm_state == states.ACTIVE and info.power_state in (PowerState.SHUTDOWN,
                                                                          PowerState.CRASHED):
                    why = info.reason or "the guest stopped"
                    row.vm_state = states.STOPPED
                    self._note(s, row, "stop", f"Instance stopped outside the API: {why}", now)
                elif row.vm_state == states.ACTIVE and info.power_state == PowerState.PAUSED:
                    row.vm_state = states.PAUSED
            # A guest of a migration to or from this host is the migration's until it ends (a
            # destination's guest may run before the control plane heard so; a cold move's source
            # keeps a stopped copy until the confirm), never an orphan.
            moving = set(s.scalars(select(mig.Migration.instance_uuid).where(
                mig.Migration.status.in_(operations.MOVING + mig.UNCONFIRMED),
                (mig.Migration.dest_compute == host) | (mig.Migration.source_compute == host))))
            orphans = [i for i in seen if i not in rows and i not in busy and i not in moving]
            # Servers that may hold ports: not deleted, and not a create the sync called interrupted.
            holders = {i for i, r in rows.items() if r.vm_state != states.DELETED
                       and (r.fault or {}).get("message") != INTERRUPTED_CREATE}
        self._free_ports(host, interrupted, holders)
        return orphans

    def _free_ports(self, host: str, interrupted: Sequence[tuple[str, str]], holders: Collection[str]) -> None:
        """Free the ports of creates that never got their work queued, and of servers that are gone.

        A server is gone when its row is (a delete whose port release was cut short by a crash, or
        a failed create whose cleanup was).  Rows are always committed before their ports are made,
        so a port whose server has no row on this host is a leftover, never one in the making.  Every
        pass looks again, so a release that fails once (or a crash right here) is retried.
        """
        if self._network is None:
            return
        for instance_id, project_id in interrupted:
            self._network.deallocate_for_instance(system_context(project_id), instance_id)
        done = {instance_id for instance_id, _ in interrupted}
        for instance_id in self._network.instances_with_ports(host) - set(holders) - done:
            with self._db() as s:
                row = s.get(t.Instance, instance_id)
                if row is not None and row.host != host:
                    continue  # moved to another host meanwhile: not ours to judge
                if row is not None and (row.fault or {}).get("message") != INTERRUPTED_CREATE:
                    continue  # created or changed since our read
            self._network.deallocate_for_instance(system_context(""), instance_id)

    @staticmethod
    def _interrupt(s: Session, row: t.Instance, now: datetime) -> bool:
        """ERROR for a build whose work never came; False if its create queued the work meanwhile.

        Conditional on the ``updated_at`` we read: the create's own write of the work bumps it, so
        of the two writes exactly one takes effect (PostgreSQL re-checks the condition after waiting
        for the row; SQLite has one writer).
        """
        fault = {"code": 500, "message": INTERRUPTED_CREATE, "details": INTERRUPTED_CREATE,
                 "created": now.isoformat()}
        done = s.execute(update(t.Instance).where(
            t.Instance.id == row.id, t.Instance.updated_at == row.updated_at,
            t.Instance.task_state == states.SPAWNING)
            .values(vm_state=states.ERROR, task_state=None, power_state=int(PowerState.NOSTATE), fault=fault,
                    updated_at=now).execution_options(synchronize_session=False))
        return getattr(done, "rowcount", 1) == 1

    def _lost(self, s: Session, row: t.Instance, why: str, now: datetime) -> None:
        row.vm_state = states.ERROR
        row.power_state = int(PowerState.NOSTATE)
        row.fault = {"code": 500, "message": why, "details": why, "created": now.isoformat()}
        row.updated_at = now

    def _note(self, s: Session, row: t.Instance, action: str, message: str, now: datetime) -> None:
        s.add(t.InstanceAction(instance_id=row.id, request_id=f"req-sync-{now.timestamp():.0f}", action=action,
                               project_id=row.project_id, user_id="yunstack-agent", message=message,
                               start_time=now, finish_time=now, updated_at=now))

    def report_memory(self, host: str, entry: Mapping[str, Any]) -> None:
        self._ledger.record(host, entry)

    def heartbeat(self, host: str, info: HostInfo) -> None:
        c = self._config.compute
        self._hosts.heartbeat(host, info, availability_zone=c.availability_zone,
                              ram_allocation_ratio=c.ram_allocation_ratio,
                              cpu_allocation_ratio=c.cpu_allocation_ratio,
                              disk_allocation_ratio=c.disk_allocation_ratio,
                              reserved_host_memory_mib=c.reserved_host_memory_mib,
                              host_ip=info.host_ip or "127.0.0.1")


__all__ = ["LocalControlPlane", "system_context"]
