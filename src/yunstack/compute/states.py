"""Nova's instance state machine: vm_state + task_state -> API status, and which actions may run."""

from __future__ import annotations

from yunstack.errors import Conflict

# vm_state values (nova.compute.vm_states)
ACTIVE, BUILDING, PAUSED, SUSPENDED, STOPPED = "active", "building", "paused", "suspended", "stopped"
RESIZED, ERROR, DELETED, SOFT_DELETED = "resized", "error", "deleted", "soft-delete"

# task_state values (nova.compute.task_states) that we use
SCHEDULING, SPAWNING, DELETING = "scheduling", "spawning", "deleting"
POWERING_OFF, POWERING_ON = "powering-off", "powering-on"
REBOOTING, REBOOTING_HARD = "rebooting", "rebooting_hard"
PAUSING, UNPAUSING, SUSPENDING, RESUMING = "pausing", "unpausing", "suspending", "resuming"
IMAGE_SNAPSHOT, IMAGE_UPLOADING = "image_snapshot", "image_uploading"
RESIZE_PREP, RESIZE_FINISH, RESIZE_REVERTING, RESIZE_CONFIRMING = (
    "resize_prep", "resize_finish", "resize_reverting", "resize_confirming")
# Not Nova's (it has no task for these): they keep other actions out while the agent plugs a NIC.
ATTACHING_INTERFACE, DETACHING_INTERFACE = "interface_attaching", "interface_detaching"

_STATUS = {
    ACTIVE: "ACTIVE", BUILDING: "BUILD", PAUSED: "PAUSED", SUSPENDED: "SUSPENDED",
    STOPPED: "SHUTOFF", RESIZED: "VERIFY_RESIZE", ERROR: "ERROR", DELETED: "DELETED",
    SOFT_DELETED: "SOFT_DELETED",
}
_TASK_STATUS = {
    REBOOTING: "REBOOT", REBOOTING_HARD: "HARD_REBOOT", RESIZE_PREP: "RESIZE", RESIZE_FINISH: "RESIZE",
    RESIZE_REVERTING: "REVERT_RESIZE",
}


def status(vm_state: str, task_state: str | None) -> str:
    """The API's ``status`` (nova.api.openstack.common.status_from_state)."""
    if vm_state in (ACTIVE, STOPPED) and task_state in _TASK_STATUS:
        return _TASK_STATUS[task_state]
    return _STATUS.get(vm_state, "UNKNOWN")


# action -> (allowed vm_states, allowed task_states (None = no task running))
ALLOWED: dict[str, tuple[frozenset[str], frozenset[str | None]]] = {
    "stop": (frozenset({ACTIVE, ERROR}), frozenset({None})),
    "start": (frozenset({STOPPED}), frozenset({None})),
    "reboot": (frozenset({ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR}), frozenset({None, REBOOTING})),
    "pause": (frozenset({ACTIVE}), frozenset({None})),
    "unpause": (frozenset({PAUSED}), frozenset({None})),
    "suspend": (frozenset({ACTIVE}), frozenset({None})),
    "resume": (frozenset({SUSPENDED}), frozenset({None})),
    "createImage": (frozenset({ACTIVE, STOPPED, PAUSED, SUSPENDED}), frozenset({None})),
    "resize": (frozenset({ACTIVE, STOPPED}), frozenset({None})),
    "confirmResize": (frozenset({RESIZED}), frozenset({None})),
    "revertResize": (frozenset({RESIZED}), frozenset({None})),
    "attach_interface": (frozenset({ACTIVE, STOPPED}), frozenset({None})),
    "detach_interface": (frozenset({ACTIVE, STOPPED}), frozenset({None})),
    "os-getConsoleOutput": (frozenset({ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR, RESIZED, BUILDING}),
                            frozenset({None, REBOOTING, REBOOTING_HARD, SPAWNING, POWERING_OFF,
                                       POWERING_ON, PAUSING, UNPAUSING, SUSPENDING, RESUMING,
                                       IMAGE_SNAPSHOT, IMAGE_UPLOADING, ATTACHING_INTERFACE,
                                       DETACHING_INTERFACE})),
}


def check(action: str, instance_id: str, vm_state: str, task_state: str | None) -> None:
    """Raise 409 the way Nova words it when ``action`` is not allowed in this state."""
    vm_ok, task_ok = ALLOWED[action]
    if vm_state not in vm_ok:
        raise Conflict("Cannot '{action}' instance {id} while it is in vm_state {state}",
                       action=action, id=instance_id, state=vm_state)
    if task_state not in task_ok:
        raise Conflict("Cannot '{action}' instance {id} while it is in task_state {state}",
                       action=action, id=instance_id, state=task_state)
