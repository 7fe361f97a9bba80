"""Nova's ``block_device_mapping_v2`` on server create: what the guest boots from, and its volumes.

Shape rules here, as Nova's API applies them; whether the images, volumes and snapshots exist
and fit is the compute service's check (``compute.bootvolumes``).  An image to ``local`` with
boot index 0 is the ordinary image boot (``openstack server create --image`` sends one); ephemeral
and swap disks (blank to ``local``) are not offered, and say so.
"""

from __future__ import annotations

from yunstack.api.compute import server_schemas as sch
from yunstack.compute.bootvolumes import BlockDevice, Source
from yunstack.errors import BadRequest

_SOURCES: tuple[Source, ...] = ("image", "volume", "snapshot", "blank")
_INVALID = "Block Device Mapping is Invalid: "


def _boot_index(value: int | str | None) -> int | None:
    """Nova's boot_index: an integer (a string of one too); negative or none means not bootable."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        index = int(value)
    except ValueError:
        raise BadRequest(_INVALID + "boot_index must be an integer, not {value!r}.", value=value) from None
    return index if index >= 0 else None


def _flag(value: bool | str | None, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on", "t", "y"):
        return True
    if text in ("false", "0", "no", "off", "f", "n"):
        return False
    raise BadRequest(_INVALID + "delete_on_termination must be a boolean, not {value!r}.", value=value)


def _source(bdm: sch.BlockDevice) -> Source:
    source = bdm.source_type
    for known in _SOURCES:
        if source == known:
            return known
    raise BadRequest(_INVALID + "source_type must be one of {known}, not {source!r}.",
                     known=", ".join(_SOURCES), source=source)


def boot_source(body: sch.ServerCreate) -> tuple[str, tuple[BlockDevice, ...]]:
    """(the image the root disk is made from, or "" for a root volume; the mapping's volumes)."""
    image = body.imageRef or ""
    devices: list[BlockDevice] = []
    for bdm in body.block_device_mapping_v2:
        if bdm.no_device:
            continue
        source = _source(bdm)
        destination = bdm.destination_type or ("local" if source in ("image", "blank") else "volume")
        if destination not in ("local", "volume"):
            raise BadRequest(_INVALID + "destination_type must be local or volume, not {dest!r}.", dest=destination)
        index = _boot_index(bdm.boot_index)
        if destination == "local":
            if source == "image" and index == 0:
                if image and bdm.uuid and bdm.uuid != image:
                    raise BadRequest("imageRef and the boot block device mapping name different images.")
                image = image or (bdm.uuid or "")
                continue
            raise BadRequest(_INVALID + "only the root disk may be local (an image with boot_index 0); ephemeral "
                             "and swap disks are not offered: use a blank volume (destination_type volume).")
        if source != "blank" and not bdm.uuid:
            raise BadRequest(_INVALID + "a {source} mapping needs the uuid of its {source}.", source=source)
        if source in ("image", "blank") and not bdm.volume_size:
            raise BadRequest(_INVALID + "Images and blank volumes with destination_type 'volume' need to have a "
                             "non-zero size specified.")
        if source == "blank" and index == 0:
            raise BadRequest(_INVALID + "a blank volume cannot be the boot disk.")
        devices.append(BlockDevice(source=source, uuid=bdm.uuid if source != "blank" else None, boot_index=index,
                                   size_gib=bdm.volume_size or None, delete_on_termination=_flag(
                                       bdm.delete_on_termination, False), volume_type=bdm.volume_type))
    roots = [d for d in devices if d.boot_index == 0]
    if len(roots) > 1 or (roots and image):
        raise BadRequest(_INVALID + "Boot sequence for the instance and image/block device mapping combination "
                         "is not valid: exactly one disk may have boot_index 0.")
    if not image and not roots:
        raise BadRequest("Missing imageRef attribute: an image to boot from (or a volume with boot_index 0) is "
                         "required.")
    return image, tuple(devices)
