"""Nova's instance state vocabulary: vm_state + task_state -> API status, and the ``Allowed`` rule.

Which states each operation may start from is declared by the operation (``compute.operations``).
"""

from __future__ import annotations

from dataclasses import dataclass

from yunstack.errors import Conflict

# vm_state values (nova.compute.vm_states)
ACTIVE, BUILDING, PAUSED, SUSPENDED, STOPPED = "active", "building", "paused", "suspended", "stopped"
RESIZED, ERROR, DELETED, SOFT_DELETED = "resized", "error", "deleted", "soft-delete"
RESCUED, SHELVED, SHELVED_OFFLOADED = "rescued", "shelved", "shelved_offloaded"

# task_state values (nova.compute.task_states) that we use
SCHEDULING, SPAWNING, DELETING = "scheduling", "spawning", "deleting"
BLOCK_DEVICE_MAPPING = "block_device_mapping"  # a build waits for the volumes it boots with
POWERING_OFF, POWERING_ON = "powering-off", "powering-on"
REBOOTING, REBOOTING_HARD = "rebooting", "rebooting_hard"
PAUSING, UNPAUSING, SUSPENDING, RESUMING = "pausing", "unpausing", "suspending", "resuming"
IMAGE_SNAPSHOT, IMAGE_UPLOADING = "image_snapshot", "image_uploading"
RESIZE_PREP, RESIZE_FINISH, RESIZE_REVERTING, RESIZE_CONFIRMING = (
    "resize_prep", "resize_finish", "resize_reverting", "resize_confirming")
RESIZE_MIGRATING = "resize_migrating"  # a cold move's source powers off and serves its disks
REBUILDING, REBUILD_SPAWNING = "rebuilding", "rebuild_spawning"
RESCUING, UNRESCUING = "rescuing", "unrescuing"
SHELVING, SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING = (
    "shelving", "shelving_image_pending_upload", "shelving_image_uploading")
SHELVING_OFFLOADING, UNSHELVING = "shelving_offloading", "unshelving"
# Not Nova's (it has no task for these): they keep other actions out while the agent plugs a NIC.
ATTACHING_INTERFACE, DETACHING_INTERFACE = "interface_attaching", "interface_detaching"
ATTACHING_VOLUME, DETACHING_VOLUME, EXTENDING_VOLUME = "volume_attaching", "volume_detaching", "volume_extending"

_STATUS = {
    ACTIVE: "ACTIVE", BUILDING: "BUILD", PAUSED: "PAUSED", SUSPENDED: "SUSPENDED",
    STOPPED: "SHUTOFF", RESIZED: "VERIFY_RESIZE", ERROR: "ERROR", DELETED: "DELETED",
    SOFT_DELETED: "SOFT_DELETED", RESCUED: "RESCUE", SHELVED: "SHELVED",
    SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
}
_TASK_STATUS = {
    REBOOTING: "REBOOT", REBOOTING_HARD: "HARD_REBOOT", RESIZE_PREP: "RESIZE", RESIZE_MIGRATING: "RESIZE",
    RESIZE_FINISH: "RESIZE", RESIZE_REVERTING: "REVERT_RESIZE", REBUILDING: "REBUILD", REBUILD_SPAWNING: "REBUILD",
}
# A server in ERROR shows only a rebuild's task (Nova: a rebuild is how an ERROR server recovers).
_ERROR_TASK_STATUS = {REBUILDING: "REBUILD", REBUILD_SPAWNING: "REBUILD"}


def status(vm_state: str, task_state: str | None) -> str:
    """The API's ``status`` (nova.api.openstack.common.status_from_state)."""
    if vm_state in (ACTIVE, STOPPED) and task_state in _TASK_STATUS:
        return _TASK_STATUS[task_state]
    if vm_state == ERROR and task_state in _ERROR_TASK_STATUS:
        return _ERROR_TASK_STATUS[task_state]
    if vm_state == RESIZED and task_state == RESIZE_REVERTING:
        return "REVERT_RESIZE"
    return _STATUS.get(vm_state, "UNKNOWN")


def vm_states_showing(status_: str) -> frozenset[str] | None:
    """The vm_states whose servers can show ``status_`` (a superset: the task decides the rest);
    None when any could (``UNKNOWN``).  Lets a list filter by status in SQL, then exactly."""
    if status_ == "UNKNOWN":
        return None
    found = {vm for vm, shown in _STATUS.items() if shown == status_}
    if status_ in _TASK_STATUS.values():
        found |= {ACTIVE, STOPPED}
    if status_ == "REVERT_RESIZE":
        found.add(RESIZED)
    if status_ in _ERROR_TASK_STATUS.values():
        found.add(ERROR)
    return frozenset(found)


@dataclass(frozen=True)
class Allowed:
    """The states something may start from (``nova.compute.api``'s ``check_instance_state``).

    Each operation declares its own (``compute.operations``); reads such as the console declare theirs here.
    """

    vm_states: frozenset[str]
    task_states: frozenset[str | None] = frozenset({None})

    def check(self, action: str, instance_id: str, vm_state: str, task_state: str | None) -> None:
        """Raise 409 the way Nova words it when ``action`` may not start in this state."""
        if vm_state not in self.vm_states:
            raise Conflict("Cannot '{action}' instance {id} while it is in vm_state {state}",
                           action=action, id=instance_id, state=vm_state)
        if task_state not in self.task_states:
            raise Conflict("Cannot '{action}' instance {id} while it is in task_state {state}",
                           action=action, id=instance_id, state=task_state)


def allowed(*vm_states: str, tasks: tuple[str | None, ...] = (None,)) -> Allowed:
    return Allowed(frozenset(vm_states), frozenset(tasks))


# os-getConsoleOutput: a read, allowed while most operations run.
CONSOLE_OUTPUT = allowed(ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR, RESIZED, BUILDING, RESCUED,
                         tasks=(None, REBOOTING, REBOOTING_HARD, SPAWNING, POWERING_OFF, POWERING_ON, PAUSING,
                                UNPAUSING, SUSPENDING, RESUMING, IMAGE_SNAPSHOT, IMAGE_UPLOADING,
                                ATTACHING_INTERFACE, DETACHING_INTERFACE, ATTACHING_VOLUME, DETACHING_VOLUME,
                                EXTENDING_VOLUME))
