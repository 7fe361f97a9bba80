"""Run host tools (iproute2, iptables, nft, dnsmasq) by argument list, never through a shell.

This is the one place where ``subprocess`` and OS errors become ``DriverError``s: a missing tool
is ``DriverMisconfigured`` (install it), a failing command is ``DriverError`` naming the command
and its stderr.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Sequence
from typing import Any

from yunstack.errors import DriverError, DriverMisconfigured

log = logging.getLogger(__name__)

TIMEOUT = 30.0


class CommandFailed(DriverError):
    """Raised when a host command exits non-zero; ``stderr`` holds what it said."""

    message = "{cmd} failed ({rc}): {stderr}"

    def __init__(self, cmd: str, rc: int, stderr: str) -> None:
        self.rc = rc
        self.stderr = stderr
        super().__init__(None, cmd=cmd, rc=rc, stderr=stderr.strip()[:500])


def run(argv: Sequence[str], *, netns: str | None = None, input: str | None = None,
        check: bool = True) -> str:
    """Run ``argv`` (inside ``netns`` when given) and return its stdout."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
    except FileNotFoundError as exc:
        raise DriverMisconfigured(detail=f"{full[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise DriverError(detail=f"{' '.join(full)} timed out after {TIMEOUT}s") from exc
    if check and done.returncode != 0:
        raise CommandFailed(" ".join(full), done.returncode, done.stderr)
    if done.returncode != 0:
        log.debug("%s -> %d: %s", " ".join(full), done.returncode, done.stderr.strip())
    return done.stdout


def ok(argv: Sequence[str], *, netns: str | None = None) -> bool:
    """True when ``argv`` exits 0 (for probes such as ``iptables -C``)."""
    try:
        run(argv, netns=netns)
    except CommandFailed:
        return False
    return True


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    """``ip -json ARGS`` parsed; an empty list when there is nothing."""
    out = run(["ip", "-json", *args], netns=netns).strip()
    data = json.loads(out) if out else []
    return data if isinstance(data, list) else []
