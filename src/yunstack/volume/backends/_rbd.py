"""Running the ``rbd`` command line for the rbd volume backend: argument lists, no shell, errno kept."""

from __future__ import annotations

import asyncio

from yunstack.errors import DriverError

RBD_TIMEOUT = 120.0  # one metadata operation (a mon or OSD may be recovering)
ENOENT, EBUSY, EEXIST = 2, 16, 17  # rbd exits with the errno of what failed


class RbdFailed(DriverError):
    """Raised when an ``rbd`` command failed; ``errno`` is its exit status (the errno of the failure)."""

    def __init__(self, errno: int, detail: str) -> None:
        self.errno = errno
        super().__init__(detail=detail)


async def run_rbd(argv: list[str], what: str, timeout: float = RBD_TIMEOUT) -> str:
    """Run ``argv`` (``rbd`` and its arguments) and return its stdout.

    Raises ``RbdFailed`` with rbd's exit status and its ``rbd:`` lines when it fails, and
    ``DriverError`` when it cannot be started or outlives ``timeout`` (it is killed then).
    """
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise DriverError(detail=f"{what}: cannot run {argv[0]}: {exc}") from exc
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), "")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise DriverError(detail=f"{what}: rbd {command} did not finish within {timeout}s") from exc
    if proc.returncode:
        text = err.decode(errors="replace")
        message = "; ".join(line for line in text.splitlines() if line.startswith("rbd:")) or text.strip()[-500:]
        raise RbdFailed(proc.returncode, detail=f"{what}: rbd {command} exited {proc.returncode}: "
                                                f"{message or 'no message'}")
    return out.decode(errors="replace")
