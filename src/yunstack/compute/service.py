"""Server use cases: create (schedule + claim + queue), list, show, update, delete and actions.

The API never waits for a VM.  Each use case checks policy and the state machine, changes the
instance's states and queues the host's work (``operations.queue_step``) in one transaction, then
wakes the host's agent.  What each operation allows, queues and finishes is declared once in
``compute.operations``; the agent reports back through ``compute.agentlink``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import addressing, listing, memoryledger, operations, scheduler, states
from yunstack.compute.aggregates import AggregateService
from yunstack.compute.bootvolumes import BlockDevice, BootVolumeOps
from yunstack.compute.consoles import ConsoleOps, ConsoleTokens
from yunstack.compute.evacuate import EvacuateOpsMixin
from yunstack.compute.flavors import FlavorService
from yunstack.compute.hostcalls import HostHub
from yunstack.compute.hosts import HostService
from yunstack.compute.inflight import CreatesInFlight
from yunstack.compute.interfaces import InterfaceOps
from yunstack.compute.keypairs import KeyPairService
from yunstack.compute.lifecycle import LifecycleOpsMixin, shelved_image
from yunstack.compute.listing import ServerFilters as ServerFilters  # the API names it here
from yunstack.compute.models import Action, Server
from yunstack.compute.namefilter import name_matcher
from yunstack.compute.operations import Operation
from yunstack.compute.quotas import QuotaService
from yunstack.compute.servergroups import BootGroup, ServerGroupService
from yunstack.compute.usage import UsageService
from yunstack.compute.volumeattach import VolumeAttachOps
from yunstack.config import Config
from yunstack.db import locks
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, Conflict, NotFound, NoValidHost, QuotaExceeded, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.memory.model import EXTRA_MEMORY_TEMPLATE, IMAGE_MEMORY_TEMPLATE, asks_for_template
from yunstack.network.dataplane.metadata_api import InstanceMetadata
from yunstack.network.service import NetworkService
from yunstack.protocol import DeleteArgs, StepArgs
from yunstack.types import new_uuid
from yunstack.volume import attachments

_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]+")
# Actions that start a stopped guest: not while a snapshot of one of its volumes is being taken.
STARTS_GUEST = frozenset({"start", "reboot", "unshelve", "rescue", "unrescue"})
# Actions that work on the root disk a host keeps (or move it): a server booted from a volume has none.
VOLUME_BACKED_REFUSED = frozenset({"rebuild", "rescue", "resize", "migrate", "live-migration",
                                   "shelve", "shelveOffload", "unshelve"})
MAX_USER_DATA = 65535
MAX_METADATA_ITEMS = 128


@dataclass(frozen=True, kw_only=True)
class ServerCreate:
    """A validated create request (the API layer parsed the wire format)."""

    name: str
    image_id: str
    flavor_ref: str
    key_name: str | None = None
    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    config_drive: bool = True  # asked for; [compute] force_config_drive gives every server one anyway
    min_count: int = 1
    max_count: int = 1
    networks: Any = None
    security_groups: Sequence[str] = ()
    availability_zone: str | None = None
    description: str | None = None
    access_ipv4: str = ""
    access_ipv6: str = ""
    tags: Sequence[str] = ()
    admin_pass: str | None = None
    return_reservation_id: bool = False
    group_id: str | None = None  # the ``group`` scheduler hint: the server group to join
    # Volumes of the block device mapping; one of boot index 0 is the root (``image_id`` is then "").
    block_devices: Sequence[BlockDevice] = ()


def split_zone(requested: str | None) -> tuple[str | None, str | None]:
    """Nova's ``AZ:HOST``, ``AZ:HOST:NODE`` and ``AZ::NODE``: the zone, and the host an admin forces.

    A node is its host here (one hypervisor per host).  The forced host still passes the filters,
    so a host that cannot take the server says why instead of being overcommitted.
    """
    if not requested or ":" not in requested:
        return requested, None
    zone, _, rest = requested.partition(":")
    host, _, node = rest.partition(":")
    return zone or None, host or node or None


def reservation_mib(flavor: Any) -> int:
    """The flavor's memory reservation (``yunstack:memory_reservation_mib``), 0 when it has none."""
    try:
        return max(0, int(flavor.extra_specs.get("yunstack:memory_reservation_mib", 0)))
    except (TypeError, ValueError):
        return 0


def expected_memory_mib(flavor: Any) -> int:
    """What a new guest will need soon: its reservation, and at least half its RAM."""
    return max(reservation_mib(flavor), (int(flavor.ram) + 1) // 2)


def _template_shape(flavor: Any, image: Any, properties: Mapping[str, str]) -> str | None:
    """The memory template shape a new server of ``flavor`` and ``image`` would start from, if it asks
    for one (the flavor's extra spec wins over the image property, as on the host)."""
    if image is None:
        return None
    asked = flavor.extra_specs.get(EXTRA_MEMORY_TEMPLATE, properties.get(EXTRA_MEMORY_TEMPLATE))
    return memoryledger.template_shape(image.id, flavor.snapshot()) if asks_for_template(asked) else None


def hostname_for(name: str) -> str:
    """A DNS-safe hostname from a server name (Nova's sanitize_hostname)."""
    text = _HOSTNAME_BAD.sub("-", name.lower().replace("_", "-")).strip("-.")
    return text[:63] or "server"


def to_server(row: t.Instance, addresses: dict[str, list[dict[str, Any]]] | None = None,
              admin_pass: str | None = None, volumes: Sequence[tuple[str, bool]] = ()) -> Server:
    return Server(
        id=row.id, name=row.name, hostname=row.hostname, description=row.description,
        project_id=row.project_id, user_id=row.user_id, host=row.host,
        availability_zone=row.availability_zone, flavor=dict(row.flavor), image_id=row.image_id,
        key_name=row.key_name, metadata=dict(row.meta or {}), tags=tuple(row.tags or ()),
        config_drive=row.config_drive, vm_state=row.vm_state, task_state=row.task_state,
        power_state=row.power_state, status=states.status(row.vm_state, row.task_state),
        progress=row.progress, locked=row.locked, locked_reason=row.locked_reason,
        access_ipv4=row.access_ipv4, access_ipv6=row.access_ipv6, reservation_id=row.reservation_id,
        launch_index=row.launch_index, fault=row.fault,
        security_groups=tuple(str(g) for g in (row.security_groups or ())),
        addresses=addresses or {}, launched_at=row.launched_at, terminated_at=row.terminated_at,
        created_at=row.created_at, updated_at=row.updated_at, admin_pass=admin_pass,
        volumes_attached=tuple(volumes),
    )


class ComputeService(InterfaceOps, VolumeAttachOps, BootVolumeOps, LifecycleOpsMixin, ConsoleOps,
                     EvacuateOpsMixin):
    """Servers: the Nova API's use cases."""

    def __init__(self, db: sessionmaker[Session], config: Config, *, flavors: FlavorService,
                 keypairs: KeyPairService, quotas: QuotaService, hosts: HostService, images: Any,
                 network: NetworkService | None = None, hub: HostHub | None = None) -> None:
        self._db = db
        self.groups = ServerGroupService(db, quotas)
        self.aggregates = AggregateService(db)
        self.usage = UsageService(db)
        self.consoles = ConsoleTokens()
        self._config = config
        self.flavors = flavors
        self.keypairs = keypairs
        self.quotas = quotas
        self.hosts = hosts
        self.images = images
        self.network = network
        # Hosts' long-polls wait here: queueing work wakes them, and reads (console) go through it.
        self.hub = hub or HostHub()
        self.notify: Callable[[str], None] = self.hub.wake
        self.creating = CreatesInFlight()  # the host's repair pass leaves these builds alone

    # -- reading ---------------------------------------------------------------------------------

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        row = s.get(t.Instance, server_id)
        if row is None or row.vm_state == states.DELETED:
            raise NotFound("Instance {id} could not be found.", id=server_id)
        try:
            policy.visible(ctx, row.project_id, kind="instance", id=server_id)
        except NotFound:
            raise NotFound("Instance {id} could not be found.", id=server_id) from None
        return row

    def _addresses(self, rows: Sequence[t.Instance]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        # With each server's project: a port of another project never shows in a server's view.
        if self.network is None or not rows:
            return {}
        return self.network.addresses_for_instances({r.id: r.project_id for r in rows})

    def get(self, ctx: AuthContext, server_id: str) -> Server:
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            volumes = _volume_ids(s, [row])
        return to_server(row, self._addresses([row]).get(row.id), volumes=volumes[row.id])

    def list_servers(self, ctx: AuthContext, f: ServerFilters) -> list[Server]:
        """One page of servers: filtered, sorted and paged in SQL (``compute.listing``); the name,
        tag, exact-status and address filters decide per row, batch by batch."""
        # Compiled first: a bad pattern is a 400 before any work, and RE2 matches in linear time.
        name_matches = name_matcher(f.name) if f.name else None
        wanted = f.status.upper() if f.status else None
        addresses: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def keep(row: t.Instance) -> bool:
            return ((name_matches is None or bool(name_matches(row.name)))
                    and (wanted is None or states.status(row.vm_state, row.task_state) == wanted)
                    and set(f.tags) <= set(row.tags or ())
                    and _addresses_match(f, addresses.get(row.id, {})))

        by_row = bool(name_matches or wanted or f.tags or f.ip or f.ip6)
        by_address = bool(f.ip or f.ip6)
        with self._db() as s:
            rows = listing.rows(s, ctx, f, keep if by_row else None,
                                (lambda batch: addresses.update(self._addresses(batch))) if by_address else None)
            volumes = _volume_ids(s, rows)
        if not by_address:
            addresses = self._addresses(rows)
        return [to_server(row, addresses.get(row.id), volumes=volumes[row.id]) for row in rows]

    # -- creating --------------------------------------------------------------------------------

    def _validate(self, ctx: AuthContext, req: ServerCreate) -> tuple[Any, Any | None, Any]:
        if req.min_count < 1 or req.max_count < req.min_count:
            raise BadRequest("min_count must be >= 1 and <= max_count.")
        if req.user_data is not None:
            try:
                raw = base64.b64decode(req.user_data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadRequest("User data needs to be valid base 64.") from exc
            if len(raw) > MAX_USER_DATA:
                raise BadRequest("User data too large. User data must be no larger than {n} bytes once "
                                 "base64 decoded.", n=MAX_USER_DATA)
        for key, value in req.metadata.items():
            if not key or len(key) > 255 or len(str(value)) > 255:
                raise BadRequest("Invalid metadata: keys must be 1-255 and values 0-255 characters.")
        flavor = self.flavors.get_for_boot(ctx, req.flavor_ref)
        image = None
        if req.image_id:  # else the root is a volume: its size is the volume's, not the flavor's
            try:
                image, _path = self.images.get_for_boot(ctx, req.image_id)
            except NotFound as exc:  # as Nova answers it: the request is bad, not the URL
                raise BadRequest("Can not find requested image") from exc
            if image.min_ram and flavor.ram < image.min_ram:
                raise BadRequest("Flavor's memory is too small for requested image.")
            size_gb = ((image.virtual_size or image.size or 0) + (1 << 30) - 1) >> 30
            if flavor.disk and (size_gb > flavor.disk or (image.min_disk or 0) > flavor.disk):
                raise BadRequest("Flavor's disk is too small for requested image. Flavor disk is {fd} GB, "
                                 "image needs {need} GB.", fd=flavor.disk, need=max(size_gb, image.min_disk or 0))
        self._check_block_devices(ctx, req.block_devices, req.max_count)
        keypair = self.keypairs.get_for_boot(ctx, req.key_name) if req.key_name else None
        if self.network is None and req.networks not in (None, "auto", "none") and req.networks != []:
            raise BadRequest("Networks other than 'auto' and 'none' need the networking service, which "
                             "this cloud does not run.")
        return flavor, image, keypair

    def create(self, ctx: AuthContext, req: ServerCreate, request_id: str) -> list[Server]:
        """Validate, check quota, schedule and claim, and queue the spawns; returns the new servers.

        Quota failures are 403 and create nothing; when no host fits, the servers are created in
        ERROR with a fault that names every host and why it was rejected (as Nova does).
        """
        with self.creating.scope() as mine:
            return self._create(ctx, req, request_id, mine)

    def _create(self, ctx: AuthContext, req: ServerCreate, request_id: str, mine: set[str]) -> list[Server]:
        policy.require_write(ctx, "compute:servers:create")
        project_id = policy.require_scoped(ctx, "compute:servers:create")
        zone, forced_host = split_zone(req.availability_zone)
        if forced_host:
            policy.require_admin(ctx, "os_compute_api:servers:create:forced_host")
        if req.image_id and self.volumes is not None and not any(d.boot_index == 0 for d in req.block_devices):
            with contextlib.suppress(NotFound):  # an image that is not there: _validate says so, as always
                if recorded := self._image_mapping(ctx, req.image_id):
                    # An image of a volume-backed server: its volumes come back from their snapshots.
                    req = replace(req, image_id="", block_devices=(*recorded, *req.block_devices))
        flavor, image, key = self._validate(ctx, req)
        group_names = self._security_group_names(ctx, req.security_groups)
        now = datetime.now(UTC)
        reservation = "r-" + secrets.token_hex(4)
        created: list[t.Instance] = []
        woken: set[str] = set()
        properties = {k: str(v) for k, v in image.properties.items()} if image is not None else {}
        with self._db() as s:
            nodes = self.hosts.scheduling_rows(s)  # outside the lock: claims do not change them
        shape = _template_shape(flavor, image, properties)
        with self._claiming(project_id) as s:
            count = self.quotas.allowed_count(s, project_id, _usage(flavor, 1), req.min_count, req.max_count)
            hosts = self.hosts.scheduling(s, nodes)
            group = self.groups.for_boot(s, ctx, req.group_id, adding=count) if req.group_id else None
            for index in range(count):
                name = req.name if count == 1 else f"{req.name}-{index + 1}"
                spec = scheduler.RequestSpec(vcpus=flavor.vcpus, memory_mib=flavor.ram,
                                             disk_gb=0 if image is None else flavor.disk,
                                             availability_zone=zone, force_host=forced_host,
                                             image_properties=properties,
                                             expected_mib=expected_memory_mib(flavor),
                                             reservation_mib=reservation_mib(flavor),
                                             template_shape=shape,
                                             **_group_spec(group))
                decision = scheduler.select(hosts, spec)
                row = t.Instance(
                    id=new_uuid(), name=name, hostname=hostname_for(name), description=req.description,
                    project_id=project_id, user_id=ctx.user.id, host=decision.host,
                    availability_zone=(zone or _zone_of(hosts, decision.host)
                                       or self._config.compute.availability_zone),
                    requested_availability_zone=zone,
                    flavor=flavor.snapshot(), image_id=image.id if image is not None else "",
                    key_name=key.name if key else None,
                    key_data=key.public_key if key else None, user_data=req.user_data,
                    meta=dict(req.metadata), tags=list(req.tags),
                    config_drive=req.config_drive or self._config.compute.force_config_drive,
                    system_metadata=_image_facts(properties),
                    requested_networks=req.networks, security_groups=group_names,
                    vm_state=states.BUILDING, task_state=states.SPAWNING, power_state=0, progress=0,
                    locked=False, access_ipv4=req.access_ipv4, access_ipv6=req.access_ipv6,
                    reservation_id=reservation, launch_index=index, created_at=now, updated_at=now,
                )
                mine.add(row.id)  # committed below, spawned later: in flight until this create ends
                if decision.host is None:
                    error = NoValidHost(decision.reasons)
                    row.vm_state, row.task_state = states.ERROR, None
                    row.fault = {"code": 500, "message": error.text, "created": now.isoformat(),
                                 "details": "\n".join(f"{h}: {why}" for h, why in sorted(decision.reasons.items()))}
                else:
                    hosts = [_claimed(h, flavor, spec) if h.host == decision.host else h for h in hosts]
                    woken.add(decision.host)
                s.add(row)
                created.append(row)
                self._record(s, row, "create", request_id, ctx)
                if group is not None:
                    self.groups.add_member(s, group.id, row.id)
                    if decision.host is not None:
                        group.hosts[decision.host] += 1
        placed = [r for r in created if r.host is not None]
        # Ports come from the network service in its own transaction: after the claim, before the
        # spawn.  A failure there (a bad network, no free address) undoes everything: nothing half-made.
        self._allocate_ports(ctx, placed, req)
        abandoned: list[str] = []
        for r in placed:
            # The mapping's volumes before the spawn: held at once, or made by the storage host first.
            failed = self._map_block_devices(ctx, r, req.block_devices, request_id) if req.block_devices else None
            with self._db.begin() as s:
                # The agent's repair pass errors a build that waited too long for this (a crash looks
                # the same).  One conditional write each way: such a server is never spawned after
                # all, and its ports go.
                if not self._start_or_wait(s, r, request_id, failed):
                    abandoned.append(r.id)
        for instance_id in abandoned:
            if self.network is not None:
                self.network.deallocate_for_instance(ctx, instance_id)
        for host in woken:
            self.notify(host)
        addresses = self._addresses(created)
        return [to_server(r, addresses.get(r.id), admin_pass=req.admin_pass or secrets.token_urlsafe(9))
                for r in created]

    def _security_group_names(self, ctx: AuthContext, requested: Sequence[str]) -> list[str]:
        """Names, as Nova shows a server's groups, for groups the request may name by id."""
        if not requested:
            return ["default"]
        if self.network is None:
            return list(requested)
        by_id = {g.id: g.name for g in self.network.list_security_groups(ctx)}
        return [by_id.get(g, g) for g in requested]

    def _allocate_ports(self, ctx: AuthContext, rows: Sequence[t.Instance], req: ServerCreate) -> None:
        if self.network is None or not rows:
            return
        requested: Any = "auto" if req.networks in (None, []) else req.networks
        done: list[str] = []
        try:
            for r in rows:
                assert r.host is not None
                self.network.allocate_for_instance(ctx, r.id, r.host, requested, list(req.security_groups),
                                                   hostname=r.hostname)
                done.append(r.id)
        except YunError:
            for instance_id in done:
                with contextlib.suppress(YunError):
                    self.network.deallocate_for_instance(ctx, instance_id)
            with self._db.begin() as s:
                for r in rows:
                    s.execute(delete(t.InstanceAction).where(t.InstanceAction.instance_id == r.id))
                    s.execute(delete(t.Instance).where(t.Instance.id == r.id))
            raise

    @contextlib.contextmanager
    def _claiming(self, project_id: str) -> Iterator[Session]:
        """A transaction for claims: the project's quota lock first, then the scheduler lock.

        Both are database locks (``db.locks``), so they hold across API workers: on PostgreSQL
        transaction advisory locks, on SQLite the single writer.  A create that waits for its own
        project's lock waits without the scheduler lock, so other projects' creates go on
        meanwhile.  Both end with the commit: the next claim reads host usage with these rows in it.
        """
        with self._db() as s:
            self.quotas.lock_project(s, project_id)
            locks.scheduler_lock(s)
            yield s
            s.commit()

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        now = datetime.now(UTC)
        s.add(t.InstanceAction(instance_id=row.id, request_id=request_id, action=action,
                               project_id=row.project_id, user_id=ctx.user.id, message=message,
                               start_time=now, updated_at=now))

    # -- changing --------------------------------------------------------------------------------

    def update(self, ctx: AuthContext, server_id: str, *, name: str | None = None,
               description: str | None = None, access_ipv4: str | None = None,
               access_ipv6: str | None = None, clear_description: bool = False) -> Server:
        policy.require_write(ctx, "compute:servers:update")
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            if name is not None:
                row.name = name
            if description is not None or clear_description:
                row.description = description
            if access_ipv4 is not None:
                row.access_ipv4 = access_ipv4
            if access_ipv6 is not None:
                row.access_ipv6 = access_ipv6
            row.updated_at = datetime.now(UTC)
        return to_server(row, self._addresses([row]).get(row.id))

    def delete(self, ctx: AuthContext, server_id: str, request_id: str) -> None:
        policy.require_write(ctx, "compute:servers:delete")
        offloaded, image_id, doomed = False, None, []
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            if row.locked and not ctx.is_admin:
                raise Conflict("Instance {id} is locked", id=server_id)
            # Claim the delete in one conditional write: of two concurrent deletes one wins and does
            # the work, the other finds it under way (204, as Nova) instead of queueing it twice.
            # (A row the agent has meanwhile soft-deleted is no claim either.)
            claim = s.execute(update(t.Instance).where(
                t.Instance.id == row.id, t.Instance.vm_state != states.DELETED,
                or_(t.Instance.task_state.is_(None), t.Instance.task_state != states.DELETING))
                .values(task_state=states.DELETING).execution_options(synchronize_session=False))
            if getattr(claim, "rowcount", 1) != 1:
                return
            self._record(s, row, "delete", request_id, ctx)
            self._end_migrations(s, row)
            if row.host is None:
                # Never scheduled, or shelved and offloaded: nothing exists on any host.
                offloaded = row.vm_state == states.SHELVED_OFFLOADED
                image_id = shelved_image(row)
                doomed = attachments.release_all(s, row.id, datetime.now(UTC))
                s.delete(row)
                host = None
            else:
                # A migration's step on the other host must not hold the delete up (it may wait on a
                # guest that is going away): it ends, and a copy it leaves there is an orphan.
                operations.end_work(s, row, "the server was deleted", but_on=row.host)
                operations.queue_step(s, row, DeleteArgs(), request_id, task=states.DELETING)
                host = row.host
        if host is not None:
            self.notify(host)
            return
        if doomed and self.volumes is not None:  # delete_on_termination (after our commit: see create)
            self.volumes.delete_with_server(doomed)
        # An offloaded server still had its ports and its shelve image (after our commit: see create).
        if offloaded and self.network is not None:
            self.network.deallocate_for_instance(ctx, server_id)
        if image_id is not None:
            with contextlib.suppress(YunError):
                self.images.delete(ctx, image_id)

    @staticmethod
    def _end_migrations(s: Session, row: t.Instance) -> None:
        """A server deleted while it moves: its migrations end, so a copy of its guest on the other
        host is no longer theirs and that host's power sync removes it.  A move that waited for its
        confirm is confirmed (Nova's delete confirms a resize too)."""
        now = datetime.now(UTC)
        for record in s.scalars(select(mig.Migration).where(mig.Migration.instance_uuid == row.id,
                                                            mig.Migration.status.in_(mig.MOVING + mig.UNCONFIRMED))):
            if record.status in ("finished", "confirming"):
                record.status = "confirmed"
            else:
                record.status, record.error = "error", "the server was deleted during its migration"
            record.step, record.updated_at = None, now

    def action(self, ctx: AuthContext, server_id: str, action: str, request_id: str,
               body: Any = None) -> Mapping[str, str]:
        """Start the operation of Nova's ``action`` from its parsed body (``compute.operations``).

        Returns what the API reports (e.g. a snapshot's image id).
        """
        if action == "createImage" and self._volume_backed(ctx, server_id):
            return self.snapshot_volume_backed(ctx, server_id, body, request_id)
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, action)
            args, result = (decl.prepare(self, s, ctx, row, body) if decl.prepare is not None
                            else (operations.no_args(decl), {}))
            self._queue_action(s, ctx, row, decl, args, request_id)
            host = decl.host_for(args) or row.host
        if host:
            self.notify(host)
        return result

    def _begin(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> tuple[t.Instance, Operation]:
        """The instance and the operation, once the caller may change it and its state allows ``action``."""
        decl = operations.by_action(action)
        policy.require_write(ctx, f"compute:servers:{action}")
        row = self._row(s, ctx, server_id)
        if row.locked and not ctx.is_admin:
            raise Conflict("Instance {id} is locked", id=server_id)
        if decl.allowed is not None:
            decl.allowed.check(action, server_id, row.vm_state, row.task_state)
        if not row.image_id and action in VOLUME_BACKED_REFUSED:
            raise Conflict("Instance {id} boots from a volume, and '{action}' needs a root disk of its host: it is "
                           "not supported for volume-backed servers yet.", id=server_id, action=action)
        if action in STARTS_GUEST and (snapping := self._snapshot_in_progress(s, row.id)) is not None:
            raise Conflict("Cannot '{action}' instance {id}: a snapshot of its volume {volume} is being taken, "
                           "and its guest must not open the volume until it is.", action=action, id=server_id,
                           volume=snapping)
        step = operations.queued(row)
        # Only a reboot may replace its own kind (a HARD reboot over a SOFT one that hangs).
        if step is not None and step.op != decl.name:
            raise Conflict("Cannot '{action}' instance {id} while another operation is in progress",
                           action=action, id=server_id)
        return row, decl

    def _queue_action(self, s: Session, ctx: AuthContext, row: t.Instance, decl: Operation, args: StepArgs,
                      request_id: str) -> None:
        """Queue the operation's host step and record the instance action (the caller commits both)."""
        operations.queue_step(s, row, args, request_id, task=decl.task_state(args), host=decl.host_for(args))
        self._record(s, row, decl.action or decl.name, request_id, ctx)

    def scheduler_hosts(self, s: Session) -> list[scheduler.HostState]:
        """Every host as the scheduler sees it, read under the scheduler lock: a move's claim (its
        migration row, written in the same transaction) and a create's never overbook one host."""
        locks.scheduler_lock(s)
        return self.hosts.scheduling(s)

    def _check_fits(self, s: Session, row: t.Instance, flavor: Any) -> None:
        locks.scheduler_lock(s)
        old = row.flavor
        spec = scheduler.RequestSpec(vcpus=max(0, flavor.vcpus - old["vcpus"]),
                                     memory_mib=max(0, flavor.ram - old["ram"]),
                                     disk_gb=max(0, flavor.disk - old.get("disk", 0)), force_host=row.host)
        decision = scheduler.select(self.hosts.scheduling(s), spec)
        if decision.host is None:
            raise NoValidHost(decision.reasons)

    def console_output(self, ctx: AuthContext, server_id: str, length: int | None) -> str:
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            states.CONSOLE_OUTPUT.check("os-getConsoleOutput", server_id, row.vm_state, row.task_state)
            host = row.host
        if not host:
            raise Conflict("Instance {id} is on no host: it has no console output.", id=server_id)
        return self.hub.call(host, server_id, "console_output", length)

    # -- the metadata service -------------------------------------------------------------------

    def server_project(self, server_id: str) -> str | None:
        """The project of a (not deleted) server, None if there is none (the network service asks)."""
        with self._db() as s:
            row = s.get(t.Instance, server_id)
            return None if row is None or row.vm_state == states.DELETED else row.project_id

    def metadata_for(self, network_id: str, ip: str) -> InstanceMetadata | None:
        """What the metadata service tells the instance that owns ``ip`` on ``network_id`` (or None)."""
        if self.network is None:
            return None
        holder = self.network.instance_for_address(network_id, ip)
        if holder is None:
            return None
        with self._db() as s:
            row = s.get(t.Instance, holder.instance_id)
            # The port must be of the server's own project: a port of another project naming this
            # server must never be answered with its user data, metadata or keys.
            if row is None or row.vm_state == states.DELETED or row.project_id != holder.project_id:
                return None
            return InstanceMetadata(
                uuid=row.id, name=row.name, hostname=row.hostname, project_id=row.project_id,
                availability_zone=row.availability_zone or "nova", launch_index=row.launch_index,
                instance_type=str(row.flavor.get("name", "")), image_id=row.image_id, local_ipv4=ip,
                public_keys={row.key_name: row.key_data} if row.key_name and row.key_data else {},
                user_data=base64.b64decode(row.user_data) if row.user_data else None,
                meta={str(k): str(v) for k, v in (row.meta or {}).items()},
                security_groups=tuple(str(g) for g in row.security_groups or ()))

    # -- metadata, tags and actions --------------------------------------------------------------

    def set_metadata(self, ctx: AuthContext, server_id: str, items: Mapping[str, str], *,
                     replace: bool) -> dict[str, str]:
        policy.require_write(ctx, "compute:server_metadata")
        for key, value in items.items():
            if not key or len(key) > 255 or len(str(value)) > 255:
                raise BadRequest("Invalid metadata: keys must be 1-255 and values 0-255 characters.")
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            if row.locked and not ctx.is_admin:  # Nova's check_instance_lock on metadata changes
                raise Conflict("Instance {id} is locked", id=server_id)
            meta = {} if replace else dict(row.meta or {})
            meta.update({k: str(v) for k, v in items.items()})
            if len(meta) > MAX_METADATA_ITEMS:
                raise QuotaExceeded("Quota exceeded for metadata_items: at most {n} items.", n=MAX_METADATA_ITEMS)
            row.meta = meta
            row.updated_at = datetime.now(UTC)
            return dict(meta)

    def _base_min_ram(self, ctx: AuthContext, image_id: str | None) -> int:
        """The ``min_ram`` of a server's base image (0 when it is gone or was never one)."""
        if not image_id:
            return 0
        try:
            return int(self.images.get(ctx, image_id).min_ram or 0)
        except NotFound:
            return 0

    def delete_metadata(self, ctx: AuthContext, server_id: str, key: str) -> None:
        policy.require_write(ctx, "compute:server_metadata")
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            if row.locked and not ctx.is_admin:
                raise Conflict("Instance {id} is locked", id=server_id)
            meta = dict(row.meta or {})
            if key not in meta:
                raise NotFound("Metadata item was not found")
            del meta[key]
            row.meta = meta

    def actions(self, ctx: AuthContext, server_id: str) -> list[Action]:
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            q = (select(t.InstanceAction).where(t.InstanceAction.instance_id == row.id)
                 .order_by(t.InstanceAction.start_time.desc(), t.InstanceAction.id.desc()))
            return [_action(a) for a in s.scalars(q)]

    def get_action(self, ctx: AuthContext, server_id: str, request_id: str) -> Action:
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            a = s.scalar(select(t.InstanceAction).where(t.InstanceAction.instance_id == row.id,
                                                        t.InstanceAction.request_id == request_id))
            if a is None:
                raise NotFound("Action {rid} not found", rid=request_id)
            events = s.scalars(select(t.InstanceActionEvent).where(t.InstanceActionEvent.action_id == a.id)
                               .order_by(t.InstanceActionEvent.id)).all()
            return _action(a, tuple({"event": e.event, "start_time": e.start_time, "finish_time": e.finish_time,
                                     "result": e.result, "traceback": e.traceback, "host": e.host}
                                    for e in events))


def _image_facts(properties: Mapping[str, str]) -> dict[str, str] | None:
    """The image's properties a host needs when it spawns the server, for its system_metadata."""
    value = properties.get(EXTRA_MEMORY_TEMPLATE)
    return None if value is None else {IMAGE_MEMORY_TEMPLATE: value}


def _usage(flavor: Any, count: int) -> dict[str, int]:
    return {"instances": count, "cores": flavor.vcpus * count, "ram": flavor.ram * count}


def _volume_ids(s: Session, rows: Sequence[t.Instance]) -> dict[str, list[tuple[str, bool]]]:
    """Each server's attached volumes (``os-extended-volumes:volumes_attached``)."""
    found = attachments.of_servers(s, [r.id for r in rows])
    return {i: [(a.volume_id, a.delete_on_termination) for a in atts] for i, atts in found.items()}


def _addresses_match(f: ServerFilters, addresses: Mapping[str, list[dict[str, Any]]]) -> bool:
    """The ``ip`` / ``ip6`` filters against the server's fixed addresses (``compute.addressing``)."""
    for pattern, version, name in ((f.ip, 4, "ip"), (f.ip6, 6, "ip6")):
        if pattern:
            fixed = [a["addr"] for net in addresses.values() for a in net
                     if a.get("version") == version and a.get("OS-EXT-IPS:type", "fixed") == "fixed"]
            if not addressing.matches(pattern, name, fixed):
                return False
    return True


def _group_spec(group: BootGroup | None) -> dict[str, Any]:
    if group is None:
        return {}
    return {"group_policy": group.policy, "group_hosts": dict(group.hosts)}


def _zone_of(hosts: Sequence[scheduler.HostState], host: str | None) -> str | None:
    """The zone of the host a server was placed on (Nova records it on a server that asked for none)."""
    return next((h.availability_zone for h in hosts if h.host == host), None) if host else None


def _claimed(h: scheduler.HostState, flavor: Any, spec: scheduler.RequestSpec) -> scheduler.HostState:
    """The host after placing one more guest of ``flavor`` (for the next guest of a multi-create)."""
    observed, used = h.observed_free_mib, h.observed_used_mib
    need = scheduler.memory_need(h, spec)
    if observed is not None:
        observed -= need
    if used is not None:
        used += need
    return replace(h, vcpus_used=h.vcpus_used + flavor.vcpus, memory_used_mib=h.memory_used_mib + flavor.ram,
                   disk_used_gb=h.disk_used_gb + flavor.disk, instances=h.instances + 1,
                   observed_free_mib=observed, observed_used_mib=used)


def _action(a: t.InstanceAction, events: tuple[dict[str, Any], ...] = ()) -> Action:
    return Action(action=a.action, instance_id=a.instance_id, request_id=a.request_id, user_id=a.user_id,
                  project_id=a.project_id, start_time=a.start_time, finish_time=a.finish_time,
                  message=a.message, updated_at=a.updated_at, events=events)
