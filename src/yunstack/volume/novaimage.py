"""A volume from Nova's image of a volume-backed server (Cinder 3.46).

Nova's ``createImage`` of a volume-backed server makes an image of no data whose
``block_device_mapping`` property records a snapshot of each volume
(``compute.bootvolumes``).  From 3.46 a volume created from such an image is made from the
snapshot of its boot volume (``source_type`` ``snapshot``, ``boot_index`` 0) instead of from the
image's bytes; Cinder looks that snapshot up at every version (404 when it is gone) and uses it
from 3.46 on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from yunstack.errors import NotFound


class NovaImageSnapshotNotFound(NotFound):
    """Raised when Nova's image names a boot volume snapshot that does not exist (or is not the caller's)."""

    message = "Nova specific image is found, but boot volume snapshot id:{id} not found."


def boot_snapshot(properties: Mapping[str, Any] | None) -> str | None:
    """The snapshot id of the boot volume an image's ``block_device_mapping`` records, if any."""
    raw = (properties or {}).get("block_device_mapping")
    if not raw:
        return None
    try:
        entries = json.loads(raw) if isinstance(raw, str) else raw
        boot = [e for e in entries if e.get("source_type") == "snapshot" and e.get("boot_index") == 0]
    except (ValueError, TypeError, AttributeError):
        return None  # not Nova's: an ordinary image property
    return str(boot[0].get("snapshot_id")) if boot else None
