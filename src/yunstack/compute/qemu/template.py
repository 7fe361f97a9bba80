"""Memory templates: a guest's RAM kept in a file and its device state saved beside it, and guests
started from the two (QEMU's "VM templating"; docs/explanation/memory-templates.md).

The template guest runs with its RAM in a file mapped shared (``cmdline.build_argv(...,
template_ram=..., template_shared=True)``), so the file holds all of it when the guest stops;
``save`` then writes only the device state (migration capability ``x-ignore-shared`` leaves the
shared RAM out).  A guest started from the template maps the same file private (copy on write:
the pages it never writes stay shared through the page cache), is started with ``-incoming
defer`` and the very same devices, and ``start`` loads the state and lets it run.  The driver
uses them through ``templatestore``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from yunstack.compute.qemu import savestate
from yunstack.compute.qemu.qmp import QmpSession

IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
IGNORE_SHARED_OFF = {"capabilities": [{"capability": "x-ignore-shared", "state": False}]}
# Bumped when what a template holds or how it is started changes: older templates are then unused.
FORMAT = 2  # 2: NICs in the template, identity over virtio-serial


def key(inputs: Mapping[str, str | int]) -> str:
    """The name of the template for ``inputs``: everything that must match between a template and
    the guests started from it (image checksum, memory, vCPUs, machine type version, CPU model,
    QEMU version, the device list), plus ``FORMAT``."""
    canonical = json.dumps({**inputs, "format": FORMAT}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


async def save(qmp: QmpSession, state: Path, label: str, timeout: float) -> None:
    """Stop the template guest and write its device state to ``state`` (its RAM stays in its file).

    On failure the guest runs on as before and no ``state`` is left behind.
    """
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED)
    await savestate.save(qmp, state, label, timeout)


async def start(qmp: QmpSession, state: Path, label: str, timeout: float) -> None:
    """Load the template's device state into a QEMU started with ``-incoming defer`` and the
    template's RAM file mapped private, then let the guest run."""
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED)
    await savestate.restore(qmp, state, label, timeout)
