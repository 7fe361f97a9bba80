"""Our daemons (dnsmasq, metadata proxies): pid files in the state dir, safe signalling.

A pid is only ever signalled when ``/proc/<pid>/cmdline`` still names the pid file's directory,
so a recycled pid of some other process is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def running(pidfile: Path, marker: str) -> int | None:
    """The live pid recorded in ``pidfile`` whose command line contains ``marker``, if any."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 1 or marker not in cmdline(pid) or _zombie(pid):
        return None
    return pid


def signal_pid(pidfile: Path, marker: str, sig: signal.Signals) -> bool:
    pid = running(pidfile, marker)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return True


def stop(pidfile: Path, marker: str, timeout: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when a process was stopped."""
    pid = running(pidfile, marker)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker not in cmdline(pid) or _zombie(pid):
            break
        time.sleep(0.02)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
    pidfile.unlink(missing_ok=True)
    return True


def find(marker: str, name: str) -> list[int]:
    """Pids of live processes whose command line contains ``name`` and ``marker`` (for strays)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = cmdline(int(entry.name))
            if name in cmd and marker in cmd and not _zombie(int(entry.name)):
                found.append(int(entry.name))
    return found
