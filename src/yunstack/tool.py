"""Running helper programs (``qemu-img``, ``genisoimage``, ...): argument lists, never a shell.

A leaf: drivers of every family (compute, volume) share it, so it imports only ``yunstack.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from yunstack.errors import DriverError


async def run_tool(argv: list[str], what: str, timeout: float = 120.0) -> str:
    """Run a helper program (argument list, no shell) and return its stdout.

    Raises ``DriverError`` naming ``what`` and quoting the tool's stderr when it fails, cannot
    be started, or outlives ``timeout`` (it is killed then).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise DriverError(detail=f"{what}: cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        # Timed out, or cancelled (an agent that stops cancels its steps): the tool goes with its
        # caller, reaped here, rather than running on unwatched after the event loop closed.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise DriverError(detail=f"{what}: {argv[0]} did not finish within {timeout}s") from exc
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise DriverError(detail=f"{what}: {message}")
    return out.decode(errors="replace")


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    """OS errors at a driver's edge become ``DriverError`` saying what was being done."""
    try:
        yield
    except OSError as exc:
        raise DriverError(detail=f"{what}: {exc}") from exc
