"""The agent <-> control plane protocol's typed messages (a neutral leaf: pydantic and our leaves only).

Both sides import these: the host agent (``agent/``) and the control plane (``compute/``).  Nothing
here imports compute, db, api or agent, so a remote agent and the HTTP transport can use them
without pulling in either side.
"""

from __future__ import annotations

from yunstack.protocol.base import Wire
from yunstack.protocol.steps import (
    AttachInterfaceArgs,
    ColdMigrationConfirmArgs,
    ColdMigrationFinishArgs,
    ColdMigrationRestoreArgs,
    ColdMigrationRevertArgs,
    ColdMigrationSendArgs,
    ConfirmResizeArgs,
    DeleteArgs,
    DetachInterfaceArgs,
    ExportedResult,
    FlavorData,
    IncomingResult,
    LiveMigrationAbortArgs,
    LiveMigrationFinishIncomingArgs,
    LiveMigrationFinishOutgoingArgs,
    LiveMigrationPrepareArgs,
    LiveMigrationSendArgs,
    PauseArgs,
    RebootArgs,
    RebuildArgs,
    RescueArgs,
    ResizeArgs,
    ResizeResult,
    ResumeArgs,
    RevertResizeArgs,
    SentResult,
    ShelveArgs,
    ShelveOffloadArgs,
    SnapshotArgs,
    SpawnArgs,
    SpawnResult,
    StartArgs,
    StepArgs,
    StepResult,
    StopArgs,
    SuspendArgs,
    UnpauseArgs,
    UnrescueArgs,
    UnshelveArgs,
    VolumeCreateArgs,
    VolumeDeleteArgs,
    VolumeExtendArgs,
    VolumeSnapshotArgs,
    VolumeSnapshotDeleteArgs,
)
from yunstack.protocol.work import ConfigDriveData, Outcome, SpecData, Work

__all__ = [
    "AttachInterfaceArgs", "ColdMigrationConfirmArgs", "ColdMigrationFinishArgs", "ColdMigrationRestoreArgs",
    "ColdMigrationRevertArgs", "ColdMigrationSendArgs", "ConfigDriveData", "ConfirmResizeArgs", "DeleteArgs",
    "DetachInterfaceArgs", "ExportedResult", "FlavorData", "IncomingResult", "LiveMigrationAbortArgs",
    "LiveMigrationFinishIncomingArgs", "LiveMigrationFinishOutgoingArgs", "LiveMigrationPrepareArgs",
    "LiveMigrationSendArgs", "Outcome", "PauseArgs", "RebootArgs", "RebuildArgs", "RescueArgs", "ResizeArgs",
    "ResizeResult", "ResumeArgs", "RevertResizeArgs", "SentResult", "ShelveArgs", "ShelveOffloadArgs",
    "SnapshotArgs", "SpawnArgs", "SpawnResult", "SpecData", "StartArgs", "StepArgs", "StepResult", "StopArgs",
    "SuspendArgs", "UnpauseArgs", "UnrescueArgs", "UnshelveArgs", "VolumeCreateArgs", "VolumeDeleteArgs",
    "VolumeExtendArgs", "VolumeSnapshotArgs", "VolumeSnapshotDeleteArgs", "Wire", "Work",
]
