"""Cinder's volume and snapshot statuses, and which operations each allows.

These are the words clients wait on (``openstack volume create --wait``, Terraform, Tempest's
waiters), so they are Cinder's exactly.  Which status an operation starts from and ends in is
decided here and in ``volume.operations``; the storage host only reports what it did.
"""

from __future__ import annotations

CREATING = "creating"
AVAILABLE = "available"
RESERVED = "reserved"
ATTACHING = "attaching"
IN_USE = "in-use"
DETACHING = "detaching"
EXTENDING = "extending"
DELETING = "deleting"
ERROR = "error"
ERROR_DELETING = "error_deleting"
ERROR_EXTENDING = "error_extending"
UPLOADING = "uploading"
DOWNLOADING = "downloading"
MAINTENANCE = "maintenance"
REVERTING = "reverting"  # to its latest snapshot (3.40); that snapshot shows RESTORING meanwhile
RESTORING = "restoring"

# Every status a volume can have (a list filter naming another status simply matches nothing, as Cinder).
VOLUME_STATUSES = frozenset({CREATING, AVAILABLE, RESERVED, ATTACHING, IN_USE, DETACHING, EXTENDING, DELETING,
                             ERROR, ERROR_DELETING, ERROR_EXTENDING, UPLOADING, DOWNLOADING, MAINTENANCE,
                             "backing-up", "restoring-backup", "error_restoring", "retyping",
                             "awaiting-transfer", "error_managing", "managing", REVERTING})
# Cinder's own list, in its words: a delete is refused from anything else.
DELETABLE = frozenset({AVAILABLE, ERROR, "error_restoring", ERROR_EXTENDING, "error_managing"})
EXTENDABLE = frozenset({AVAILABLE})
SNAPSHOT_SOURCES = frozenset({AVAILABLE})  # in-use needs force and the guest's cooperation (attach slice)
CLONE_SOURCES = frozenset({AVAILABLE})

# Snapshots.
SNAPSHOT_DELETABLE = frozenset({AVAILABLE, ERROR})
SNAPSHOT_STATUSES = frozenset({CREATING, AVAILABLE, DELETING, ERROR, ERROR_DELETING, "backing-up", RESTORING,
                               "unmanaging"})
# What an admin's os-reset_status may set.
RESETTABLE = frozenset(VOLUME_STATUSES)
