"""Cinder's request bodies, checked as Cinder's JSON schemas check them: a bad one is a 400 that says why."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from yunstack.errors import BadRequest, NotFound
from yunstack.volume.service import VolumeCreate, check_metadata

_TRUE = ("true", "1", "yes", "y", "t", "on")
_FALSE = ("false", "0", "no", "n", "f", "off")


def object_of(body: Any, key: str) -> dict[str, Any]:
    """``body[key]`` as an object, or 400 naming the key (``{"volume": {...}}``)."""
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Invalid input received: the request body needs an object under '{key}'.")
    inner: dict[str, Any] = body[key]
    return inner


def bool_of(value: Any, name: str) -> bool:
    """Cinder's ``strutils.bool_from_string(strict=True)``: a bool or one of its words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BadRequest(f"Invalid input received: '{value}' is not a valid boolean value for {name}.")


def size_of(value: Any, name: str = "size") -> int:
    """A whole number of GiB above 0, as a number or a string of digits."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 1:
        raise BadRequest(f"Invalid input received: {name} '{value}' must be an integer and greater than 0.")
    if value > 0x7FFFFFFF:
        raise BadRequest(f"Invalid input received: {name} '{value}' is too large.")
    return value


def optional_text(value: Any, name: str, limit: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or (name == "name" and len(value) > limit):
        raise BadRequest(f"Invalid input received: {name} must be a string of at most {limit} characters.")
    return value


def metadata_of(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise BadRequest("Invalid input received: metadata must be an object of strings.")
    return check_metadata(value)


def _id(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise BadRequest(f"Invalid input received: {name} must be an id.")
    return value


CREATE_KEYS = frozenset({"size", "name", "description", "display_name", "display_description", "volume_type",
                         "availability_zone", "metadata", "imageRef", "image_id", "snapshot_id", "source_volid",
                         "multiattach", "consistencygroup_id", "backup_id", "group_id", "scheduler_hints",
                         "OS-SCH-HNT:scheduler_hints"})


_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def volume_create_of(body: Any, version: tuple[int, int] = (3, 0)) -> VolumeCreate:
    """``version``: Cinder looks ``group_id`` up from 3.13 (and ``backup_id`` from 3.47) and ignores
    them before; ``consistencygroup_id`` at every version.  There are no groups here: none is found."""
    v = object_of(body, "volume")
    unknown = set(v) - CREATE_KEYS
    if unknown:
        raise BadRequest(f"Invalid input received: unexpected key(s) {sorted(unknown)} in volume.")
    if v.get("consistencygroup_id"):
        raise NotFound(f"ConsistencyGroup {v['consistencygroup_id']} could not be found.")
    if v.get("group_id") and version >= (3, 13):
        raise NotFound(f"Group {v['group_id']} could not be found.")
    if v.get("backup_id") and version >= (3, 47):  # a volume from a backup: there are no backups here
        if not isinstance(v["backup_id"], str) or not _UUID.fullmatch(v["backup_id"]):
            raise BadRequest(f"Invalid input for field/attribute backup_id. Value: {v['backup_id']}. "
                             f"'{v['backup_id']}' is not a 'uuid'")
        raise NotFound(f"Backup {v['backup_id']} could not be found.")
    size = None if v.get("size") is None else size_of(v.get("size"))
    sources = [k for k in ("imageRef", "image_id", "snapshot_id", "source_volid") if v.get(k)]
    if size is None and not sources:
        raise BadRequest("Invalid input received: a volume needs a size (or a snapshot or volume to copy it from).")
    volume_type = v.get("volume_type")
    if volume_type is not None and not isinstance(volume_type, str):
        raise BadRequest("Invalid input received: volume_type must be a name or an id.")
    zone = v.get("availability_zone")
    if zone is not None and not isinstance(zone, str):
        raise BadRequest("Invalid input received: availability_zone must be a string.")
    return VolumeCreate(
        size=size, name=optional_text(v.get("name", v.get("display_name")), "name"),
        description=optional_text(v.get("description", v.get("display_description")), "description"),
        volume_type=volume_type or None, availability_zone=zone or None,
        metadata=metadata_of(v["metadata"]) if v.get("metadata") is not None else None,
        image_id=_id(v.get("imageRef") or v.get("image_id"), "imageRef"),
        snapshot_id=_id(v.get("snapshot_id"), "snapshot_id"), source_volid=_id(v.get("source_volid"), "source_volid"),
        multiattach=bool_of(v.get("multiattach", False), "multiattach"), nova_image=version >= (3, 46))


def action_of(body: Any) -> tuple[str, Any]:
    """An ``/action`` body: exactly one key, the action's name."""
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid input received: an action body holds exactly one action.")
    ((name, args),) = body.items()
    return str(name), args


def args_of(args: Any, action: str) -> dict[str, Any]:
    """An action's arguments as an object (``{"os-extend": {"new_size": 2}}`` -> ``{"new_size": 2}``)."""
    if not isinstance(args, dict):
        raise BadRequest(f"Invalid input received: the arguments of {action} must be an object.")
    return args
