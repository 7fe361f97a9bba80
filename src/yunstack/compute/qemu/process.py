"""The QEMU process of one guest: launch daemonized, find it again, end it.

A guest's process is found by its pidfile and confirmed by ``/proc/PID/cmdline`` holding our
``-name guest=<id>`` (a recycled PID is never mistaken for a guest).  QEMU removes its pidfile
on every orderly exit (guest power-off, ``quit``, SIGTERM), so a pidfile whose process is gone
means QEMU was killed or crashed.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from yunstack.compute.qemu.cmdline import InstancePaths, name_arg
from yunstack.errors import DriverError

LAUNCH_TIMEOUT = 60.0
KILL_TIMEOUT = 10.0
_PR_SET_THP_DISABLE = 41


def log_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file; empty when it does not exist."""
    try:
        with path.open("rb") as fh:
            if lines <= 0:
                return [line.decode(errors="replace").rstrip("\r\n") for line in fh]
            return [line.decode(errors="replace").rstrip("\r\n") for line in deque(fh, lines)]
    except FileNotFoundError:
        return []


def read_pid(paths: InstancePaths) -> int | None:
    """The PID in the pidfile, or None when there is none (or it is garbage)."""
    try:
        return int(paths.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_guest_process(pid: int, instance_id: str) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the QEMU of ``instance_id``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and name_arg(instance_id).encode() in cmdline


def live_pid(paths: InstancePaths, instance_id: str) -> int | None:
    """The PID of the guest's running QEMU, or None."""
    pid = read_pid(paths)
    return pid if pid is not None and is_guest_process(pid, instance_id) else None


def _thp_disabler() -> Callable[[], None]:
    """A preexec function that sets PR_SET_THP_DISABLE (kept across fork and exec, so QEMU has it).

    The libc symbol is looked up here, in the parent; the child only makes the one syscall.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def disable() -> None:
        prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)

    return disable


def _cgroup_joiner(procs: Path) -> Callable[[], None]:
    """A preexec function that moves the child into the cgroup whose ``cgroup.procs`` is ``procs``.

    Before exec, so that QEMU's own memory is charged to the guest's cgroup from its first page: a
    cgroup v1 does not move the charges of a process that joins it later, and the ~12 MiB QEMU
    allocates before it daemonizes stayed with the agent's cgroup.  A failure leaves the child where
    it is (the caller moves the daemon afterwards, as before).
    """
    target = os.fsencode(procs)

    def join() -> None:
        try:
            fd = os.open(target, os.O_WRONLY)
            try:
                os.write(fd, b"%d\n" % os.getpid())
            finally:
                os.close(fd)
        except OSError:
            pass

    return join


def _preexec(steps: list[Callable[[], None]]) -> Callable[[], None] | None:
    if not steps:
        return None

    def run() -> None:
        for step in steps:
            step()

    return run


async def launch(argv: list[str], paths: InstancePaths, instance_id: str, *, disable_thp: bool = False,
                 cgroup_procs: Path | None = None) -> int:
    """Start QEMU daemonized and return the guest's PID once the daemon is set up.

    QEMU's own stdout/stderr go to ``qemu.log`` (appended).  If QEMU fails, the error quotes
    the log's last lines.  ``disable_thp`` turns transparent huge pages off for the process;
    ``cgroup_procs`` (a cgroup's ``cgroup.procs``) starts it in that cgroup.
    """
    preexec = _preexec(([_thp_disabler()] if disable_thp else [])
                       + ([_cgroup_joiner(cgroup_procs)] if cgroup_procs is not None else []))
    paths.pidfile.unlink(missing_ok=True)
    paths.qmp.unlink(missing_ok=True)
    paths.status_qmp.unlink(missing_ok=True)
    paths.identity.unlink(missing_ok=True)
    with paths.qemu_log.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, preexec_fn=preexec,
            )
        except OSError as exc:
            raise DriverError(detail=f"starting QEMU for {instance_id}: cannot run {argv[0]}: {exc}") from exc
    try:
        code = await asyncio.wait_for(proc.wait(), LAUNCH_TIMEOUT)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise DriverError(
            detail=f"starting QEMU for {instance_id}: no daemon after {LAUNCH_TIMEOUT}s; "
            + last_words(paths)
        ) from exc
    pid = live_pid(paths, instance_id)
    if code != 0 or pid is None:
        raise DriverError(
            detail=f"starting QEMU for {instance_id} failed (exit status {code}); " + last_words(paths)
        )
    return pid


def last_words(paths: InstancePaths, lines: int = 5) -> str:
    """QEMU's last log lines, for error messages."""
    tail = [line for line in log_tail(paths.qemu_log, lines + 1) if not line.startswith("--- ")][-lines:]
    return "qemu.log: " + (" | ".join(tail) if tail else "(empty)")


async def wait_gone(pid: int, instance_id: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the guest's process to end; True if it did."""
    deadline = time.monotonic() + timeout
    while is_guest_process(pid, instance_id):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def kill(pid: int, instance_id: str) -> None:
    """SIGKILL the guest's process and wait (bounded) until it is gone."""
    if not is_guest_process(pid, instance_id):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not await wait_gone(pid, instance_id, KILL_TIMEOUT):
        raise DriverError(detail=f"QEMU process {pid} of {instance_id} survived SIGKILL for {KILL_TIMEOUT}s")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
