"""Managed save: a guest's memory and device state to a file and back, through QMP migration.

The file is handed to QEMU as a file descriptor (SCM_RIGHTS + ``getfd``, then ``fd:`` URIs);
``exec:`` URIs are never used because QEMU runs them through /bin/sh.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from yunstack.compute.qemu.qmp import QmpSession
from yunstack.errors import DriverError

SAVE_FD = "yunstack-save"
RESTORE_FD = "yunstack-restore"


def timeout_for(memory_mib: int) -> float:
    """How long saving or restoring ``memory_mib`` of guest RAM may take."""
    return 60.0 + memory_mib / 20


async def save(qmp: QmpSession, dest: Path, instance_id: str, timeout: float) -> None:
    """Pause the guest and write its state to ``dest``; on failure the guest runs on as before."""
    status = (await qmp.execute("query-status"))["status"]
    part = dest.with_name(dest.name + ".part")
    await qmp.execute("stop")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await qmp.pass_fd(fd, SAVE_FD)
        finally:
            os.close(fd)
        await qmp.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        await qmp.execute("migrate", {"uri": f"fd:{SAVE_FD}"})
        await _wait_migrated(qmp, instance_id, timeout)
        part.replace(dest)
    except BaseException:
        part.unlink(missing_ok=True)
        if status == "running":
            await qmp.execute("cont")
        raise


async def restore(qmp: QmpSession, source: Path, instance_id: str, timeout: float) -> None:
    """Load the state in ``source`` into a QEMU started with ``-incoming defer``, then run it."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await qmp.pass_fd(fd, RESTORE_FD)
    finally:
        os.close(fd)
    # The load's end is awaited as QEMU's MIGRATION event (with the "events" capability), not
    # polled for: a clone of a memory template is ready that much sooner.  A load that fails ends
    # the QEMU: the status asked for every second meanwhile then fails with the session.
    await qmp.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with qmp.events("MIGRATION") as migration:
        await qmp.execute("migrate-incoming", {"uri": f"fd:{RESTORE_FD}"})
        while (status := (await qmp.execute("query-status"))["status"]) == "inmigrate":
            if loop.time() >= deadline:
                raise DriverError(detail=f"restoring {instance_id}: state not loaded within {timeout:.0f}s")
            await migration.wait(lambda data: data.get("status") in ("completed", "failed", "cancelled"),
                                 min(1.0, max(0.0, deadline - loop.time())))
    if status == "paused":  # the state was saved paused; a resumed guest runs
        await qmp.execute("cont")
    elif status != "running":
        raise DriverError(detail=f"restoring {instance_id}: guest ended in state {status}")


async def _wait_migrated(qmp: QmpSession, instance_id: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        info = await qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise DriverError(detail=f"saving {instance_id}: {info.get('error-desc', status)}")
        if loop.time() >= deadline:
            await qmp.execute("migrate_cancel")
            raise DriverError(detail=f"saving {instance_id}: not done within {timeout:.0f}s")
        await asyncio.sleep(0.05)
