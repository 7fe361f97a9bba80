"""Each host step's typed arguments and typed result, one model per operation.

The ``op`` field names the operation and discriminates the unions, so a ``Work`` read back from
JSON (or from its task row) comes back as the exact model of its operation.  Arguments are
what the host needs to carry the step out; they never carry the control plane's ``vm_state``
vocabulary (the control plane decides that from the ``Outcome``; see ``compute.operations``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from yunstack.protocol.base import Wire


class FlavorData(Wire):
    """A flavor as an instance keeps it (``compute.models.Flavor.snapshot``)."""

    id: str
    name: str
    ram: int
    vcpus: int
    disk: int = 0
    ephemeral: int = 0
    swap: int = 0
    extra_specs: dict[str, str] = Field(default_factory=dict)


class SpawnArgs(Wire):
    op: Literal["spawn"] = "spawn"


class DeleteArgs(Wire):
    op: Literal["delete"] = "delete"


class StopArgs(Wire):
    op: Literal["stop"] = "stop"


class StartArgs(Wire):
    op: Literal["start"] = "start"


class RebootArgs(Wire):
    op: Literal["reboot"] = "reboot"
    type: Literal["SOFT", "HARD"] = "SOFT"


class PauseArgs(Wire):
    op: Literal["pause"] = "pause"


class UnpauseArgs(Wire):
    op: Literal["unpause"] = "unpause"


class SuspendArgs(Wire):
    op: Literal["suspend"] = "suspend"


class ResumeArgs(Wire):
    op: Literal["resume"] = "resume"


class SnapshotArgs(Wire):
    op: Literal["snapshot"] = "snapshot"
    image_id: str  # the queued image the host uploads the disk into


class ResizeArgs(Wire):
    op: Literal["resize"] = "resize"
    flavor: FlavorData  # the new one


class ConfirmResizeArgs(Wire):
    op: Literal["confirm_resize"] = "confirm_resize"


class RevertResizeArgs(Wire):
    op: Literal["revert_resize"] = "revert_resize"
    old_flavor: FlavorData | None = None  # the host rebuilds the old spec from it


class AttachInterfaceArgs(Wire):
    op: Literal["attach_interface"] = "attach_interface"
    port_id: str


class DetachInterfaceArgs(Wire):
    op: Literal["detach_interface"] = "detach_interface"
    port_id: str
    mac: str


class RebuildArgs(Wire):
    op: Literal["rebuild"] = "rebuild"
    image_id: str
    keep_stopped: bool = False  # a stopped server stays stopped (SHUTOFF) after its rebuild
    preserve_ephemeral: bool = False
    migration_id: str | None = None  # an evacuation's ``migrations`` row, finished with this rebuild


class RescueArgs(Wire):
    op: Literal["rescue"] = "rescue"
    image_id: str


class UnrescueArgs(Wire):
    op: Literal["unrescue"] = "unrescue"


class ShelveArgs(Wire):
    op: Literal["shelve"] = "shelve"
    image_id: str
    offload: bool = True


class ShelveOffloadArgs(Wire):
    op: Literal["shelve_offload"] = "shelve_offload"


class UnshelveArgs(Wire):
    op: Literal["unshelve"] = "unshelve"
    image_id: str | None = None  # the shelve image (an offloaded guest is spawned from it)
    on_host: bool = True


# -- live migration: four steps on two hosts (docs/explanation/migration.md) ------------------------
# Each names the host that runs it (``host``): a migration's steps alternate between the source and
# the destination, while the instance's own host stays the source until the guest runs on the other.

class LiveMigrationPrepareArgs(Wire):
    """Destination: wait for the guest (``driver.prepare_incoming``) on this host's own address."""

    op: Literal["live_migration_prepare"] = "live_migration_prepare"
    host: str
    migration_id: str


class LiveMigrationSendArgs(Wire):
    """Source: copy disks and memory to where the destination waits (``driver.send``)."""

    op: Literal["live_migration_send"] = "live_migration_send"
    host: str
    migration_id: str
    uri: str
    disks_uri: str | None = None
    mode: Literal["paused", "precopy"] = "paused"


class LiveMigrationFinishIncomingArgs(Wire):
    """Destination: let the received guest run."""

    op: Literal["live_migration_finish_incoming"] = "live_migration_finish_incoming"
    host: str
    migration_id: str
    resume: bool = True  # False: the server was PAUSED before the move and stays paused


class LiveMigrationFinishOutgoingArgs(Wire):
    """Source: remove the sent guest's process, disks and files."""

    op: Literal["live_migration_finish_outgoing"] = "live_migration_finish_outgoing"
    host: str
    migration_id: str


class LiveMigrationAbortArgs(Wire):
    """Either side: undo the migration there (``driver.abort_migration``); the destination goes first."""

    op: Literal["live_migration_abort"] = "live_migration_abort"
    host: str
    migration_id: str
    side: Literal["destination", "source"]


# -- cold migration and resize to another host: the guest is off while its disks move -------------
# send (source) -> finish (destination) -> VERIFY_RESIZE -> confirm (source) or revert (destination)
# then restore (source).  A failed send or finish is undone by restore.  ``secret`` is the
# pre-shared key of the one NBD connection that copies the disks (TLS-PSK), new for each move.

class ColdMigrationSendArgs(Wire):
    """Source: power the guest off and export its local disks, read-only, for one reader."""

    op: Literal["cold_migration_send"] = "cold_migration_send"
    host: str
    migration_id: str
    secret: str
    power_on: bool  # the guest ran before the move: it runs again where it lands


class ColdMigrationFinishArgs(Wire):
    """Destination: copy the disks from the source's export and start the guest (if it ran)."""

    op: Literal["cold_migration_finish"] = "cold_migration_finish"
    host: str
    migration_id: str
    secret: str
    disks: list[str]  # the source's NBD exports, one per local disk, in the spec's order
    power_on: bool


class ColdMigrationConfirmArgs(Wire):
    """Source: the move is kept; the stopped guest left behind and its disks go."""

    op: Literal["cold_migration_confirm"] = "cold_migration_confirm"
    host: str
    migration_id: str
    running: bool  # the guest on the destination runs (what the server shows afterwards)


class ColdMigrationRevertArgs(Wire):
    """Destination: the move is undone; the guest and the disks that arrived here go."""

    op: Literal["cold_migration_revert"] = "cold_migration_revert"
    host: str
    migration_id: str
    power_on: bool


class ColdMigrationRestoreArgs(Wire):
    """Source: the guest is this host's again (after a revert or a failed move); started if it ran."""

    op: Literal["cold_migration_restore"] = "cold_migration_restore"
    host: str
    migration_id: str
    power_on: bool


# -- volumes in a guest: the compute host's steps on a server (the storage host keeps the volume) ------

class NbdConnection(Wire):
    """Where a compute host reaches a volume kept on another host: the storage host's NBD export, open
    to the holder of this TLS pre-shared key only (``volume.export``)."""

    host: str
    port: int
    export: str
    psk_identity: str
    psk_key: str = Field(repr=False)  # hex; never logged


class AttachVolumeArgs(Wire):
    """Compute host: hot-plug the volume into the guest (or record it for the next start of a stopped one).

    ``nbd`` when the volume is kept on another host (its export); else this host opens its own file.
    """

    op: Literal["attach_volume"] = "attach_volume"
    volume_id: str
    read_only: bool = False
    nbd: NbdConnection | None = None


class ExtendVolumeArgs(Wire):
    """Compute host: the attached volume grows to ``size_gib`` (a running QEMU grows it and tells the
    guest; a stopped guest's volume is grown by the host's backend)."""

    op: Literal["extend_volume"] = "extend_volume"
    volume_id: str
    size_gib: int


class DetachVolumeArgs(Wire):
    """Compute host: unplug the volume; done once the guest has let go of it."""

    op: Literal["detach_volume"] = "detach_volume"
    volume_id: str


# -- block storage: the storage host's steps on a volume (docs/explanation/block-storage-design.md) --
# A volume step's ``Work.instance_id`` is the volume's id and its ``resource_type`` is ``volume``.

class VolumeCreateArgs(Wire):
    """Storage host: make the volume, empty or from one source (at most one is named)."""

    op: Literal["volume_create"] = "volume_create"
    size_gib: int
    image_id: str | None = None  # the image whose bytes it starts with (the host reads it like a guest's)
    snapshot_id: str | None = None
    source_volid: str | None = None


class VolumeDeleteArgs(Wire):
    """Storage host: remove the volume (absent already: done)."""

    op: Literal["volume_delete"] = "volume_delete"


class VolumeExtendArgs(Wire):
    """Storage host: grow the volume to ``size_gib``."""

    op: Literal["volume_extend"] = "volume_extend"
    size_gib: int


class VolumeSnapshotArgs(Wire):
    """Storage host: freeze the volume's bytes as snapshot ``snapshot_id``."""

    op: Literal["volume_snapshot"] = "volume_snapshot"
    snapshot_id: str


class VolumeRevertArgs(Wire):
    """Storage host: give the volume back the bytes of its latest snapshot ``snapshot_id`` (Cinder 3.40)."""

    op: Literal["volume_revert"] = "volume_revert"
    snapshot_id: str


class VolumeUploadArgs(Wire):
    """Storage host: write the volume's bytes, in ``disk_format``, into the queued image ``image_id``."""

    op: Literal["volume_upload"] = "volume_upload"
    image_id: str
    disk_format: Literal["raw", "qcow2"]


class VolumeExportArgs(Wire):
    """Storage host: serve the volume over NBD to ``client_host`` (a key of its own); the report says where."""

    op: Literal["volume_export"] = "volume_export"
    client_host: str


class VolumeUnexportArgs(Wire):
    """Storage host: stop serving the volume (not served: done)."""

    op: Literal["volume_unexport"] = "volume_unexport"


class VolumeSnapshotDeleteArgs(Wire):
    """Storage host: forget snapshot ``snapshot_id`` (its bytes go once nothing is based on them)."""

    op: Literal["volume_snapshot_delete"] = "volume_snapshot_delete"
    snapshot_id: str


StepArgs = Annotated[
    SpawnArgs | DeleteArgs | StopArgs | StartArgs | RebootArgs | PauseArgs | UnpauseArgs | SuspendArgs
    | ResumeArgs | SnapshotArgs | ResizeArgs | ConfirmResizeArgs | RevertResizeArgs | AttachInterfaceArgs
    | DetachInterfaceArgs | RebuildArgs | RescueArgs | UnrescueArgs | ShelveArgs | ShelveOffloadArgs
    | UnshelveArgs | LiveMigrationPrepareArgs | LiveMigrationSendArgs | LiveMigrationFinishIncomingArgs
    | LiveMigrationFinishOutgoingArgs | LiveMigrationAbortArgs | ColdMigrationSendArgs | ColdMigrationFinishArgs
    | ColdMigrationConfirmArgs | ColdMigrationRevertArgs | ColdMigrationRestoreArgs | AttachVolumeArgs
    | DetachVolumeArgs | ExtendVolumeArgs | VolumeCreateArgs
    | VolumeDeleteArgs | VolumeExtendArgs | VolumeSnapshotArgs | VolumeSnapshotDeleteArgs | VolumeUploadArgs
    | VolumeExportArgs | VolumeUnexportArgs | VolumeRevertArgs,
    Field(discriminator="op")]


# -- results: what a step observed beyond the power state -----------------------------------------

class SpawnResult(Wire):
    op: Literal["spawn"] = "spawn"
    adopted: bool = False  # the guest already existed (an earlier agent started it): adopted, not duplicated


class ResizeResult(Wire):
    op: Literal["resize"] = "resize"
    was_running: bool  # the guest ran before the resize, so it was started again after it


class IncomingResult(Wire):
    """Where the destination waits: memory and device state at ``uri``, local disks at ``disks_uri``."""

    op: Literal["live_migration_prepare"] = "live_migration_prepare"
    uri: str
    disks_uri: str | None = None


class SentResult(Wire):
    """What the source measured while sending (``driver.MigrationStats``)."""

    op: Literal["live_migration_send"] = "live_migration_send"
    mode: str
    total_ms: int
    downtime_ms: int
    memory_bytes: int = 0
    disk_bytes: int = 0


class ExportedResult(Wire):
    """Where the source serves the stopped guest's local disks (NBD over TLS-PSK, one reader each)."""

    op: Literal["cold_migration_send"] = "cold_migration_send"
    disks: list[str]


class AttachedResult(Wire):
    """The device name the guest sees the attached volume as (``vdb``)."""

    op: Literal["attach_volume"] = "attach_volume"
    device: str


class VolumeExportedResult(Wire):
    """Where the storage host serves the volume (and the key that opens it)."""

    op: Literal["volume_export"] = "volume_export"
    connection: NbdConnection


StepResult = Annotated[SpawnResult | ResizeResult | IncomingResult | SentResult | ExportedResult | AttachedResult
                       | VolumeExportedResult, Field(discriminator="op")]


# -- progress: the named steps a long operation reports while it runs ------------------------------
# The control plane maps each to the task state the API shows (``compute.operations``); the names
# are Nova's task states, so the mapping is the identity today.
REBUILD_SPAWNING = "rebuild_spawning"
SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
SPAWNING = "spawning"
