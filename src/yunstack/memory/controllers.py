"""Controllers: apply the policy's ``Actions`` through narrow interfaces.

- ``BalloonControl``: the compute driver's ``set_balloon_target`` (QMP ``balloon``).
- ``CgroupControl``: one memory cgroup per VM under a yunstack parent, which may carry a host budget.
- ``KsmControl``: the global KSM sysfs knobs; reads them back every period and writes what differs (other
  processes change them too, which it reports), and puts back what the machine had on ``restore``
  once the last yunstack process using them is done (``KsmClaims``).
- ``SwapControl``: one swapfile yunstack owns (created, swapped on, removed); other swap areas are
  never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from yunstack.cgroups import MemoryCgroups, leaf_name
from yunstack.errors import DriverError
from yunstack.memory.collectors import KSM_DIR
from yunstack.memory.model import CgroupSetting, KsmSettings

log = logging.getLogger(__name__)

_KSM_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")


class BalloonControl(Protocol):
    """Sets a guest's balloon target (``ComputeDriver.set_balloon_target``)."""

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        """Ask the guest's balloon to leave it ``target_bytes`` of RAM."""


class CgroupControl:
    """Per-VM memory cgroups ``<parent>/<instance-id>`` and the parent's optional budget."""

    def __init__(self, cgroups: MemoryCgroups | None, parent: str) -> None:
        self.cgroups = cgroups if parent else None
        self.parent = parent
        self._applied: dict[str, CgroupSetting] = {}

    @property
    def available(self) -> bool:
        return self.cgroups is not None

    def prepare(self, budget_bytes: int = 0, budget_swap_bytes: int = -1) -> None:
        """Create the parent; with a budget, limit it (memory, and memory + swap)."""
        if self.cgroups is None:
            return
        self.cgroups.create(self.parent)
        if budget_bytes > 0:
            swap = None if budget_swap_bytes < 0 else budget_swap_bytes
            self.cgroups.set_limits(self.parent, limit=budget_bytes, swap_limit=swap)

    def apply(self, instance_id: str, setting: CgroupSetting) -> bool:
        """Apply one VM's setting if its cgroup exists and the setting changed; True if written."""
        if self.cgroups is None:
            return False
        name = leaf_name(self.parent, instance_id)
        if not self.cgroups.exists(name) or self._applied.get(instance_id) == setting:
            return False
        self.cgroups.set_limits(name, limit=setting.limit, swap_allowed=setting.swap_allowed,
                                soft_limit=setting.soft_limit, swappiness=setting.swappiness)
        self._applied[instance_id] = setting
        return True

    def forget(self, instance_id: str) -> None:
        self._applied.pop(instance_id, None)

    def release_budget(self) -> None:
        """Lift the parent's limits (the guests outlive the manager; they must not keep a stale budget)."""
        if self.cgroups is not None and self.cgroups.exists(self.parent):
            self.cgroups.set_limits(self.parent, limit=None)

    def remove_if_unused(self) -> bool:
        """At shutdown: remove the parent (and dead guests' leaves) unless a guest still runs in it."""
        return self.cgroups is None or self.cgroups.remove_if_unused(self.parent)


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), None if it is gone.

    With the PID it names one process: a PID the kernel reused has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields from 3 on follow the command's ")"


class KsmClaims:
    """Which yunstack processes on this machine use the KSM knobs, and what the knobs were before them.

    KSM is one per machine, and one machine may run several memory managers (the lab's hosts, a test
    beside a benchmark). If each recorded "the original" when it started, a later one would record the
    earlier one's values, and whichever restored last would leave KSM running. So the first holder
    records the machine's values in a file that all holders share; each holder adds itself, and only
    the last one out gets the values back to write. A holder is its PID with that process's start time,
    so one that died without leaving is dropped by the next that looks. When no holder is alive, the
    file's values are still the machine's (nobody restored them) and the next holder inherits them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def join(self, read: Callable[[], dict[str, str]]) -> tuple[str, dict[str, str]]:
        """Add a holder; return its token and the machine's values (``read()`` if nobody held them).

        ``read`` runs under the lock: a holder leaving at the same moment restores either before it
        (we read the machine's values) or after we joined (it is then not the last one out).
        """
        token = f"{os.getpid()}:{_started(os.getpid())}:{uuid.uuid4().hex[:8]}"
        with self._locked() as record:
            original = record.get("original") or read()
            record["original"] = original
            record["holders"] = [*record.get("holders", []), token]
        return token, dict(original)

    def leave(self, token: str, restore: Callable[[dict[str, str]], None], fallback: dict[str, str]) -> bool:
        """Remove a holder; if it was the last one alive, ``restore`` the machine's values (under the
        lock, so nobody joins half-way) and return True.

        ``fallback`` (what this holder recorded itself) is used when the record lost its values:
        removed or unreadable while we held KSM.  We then cannot know of other holders; if there
        are any, they write their knobs again at their next period.
        """
        with self._locked() as record:
            holders = [h for h in record.get("holders", []) if h != token]
            if holders:
                record["holders"] = holders
                return False
            original = record.get("original") or fallback
            record.clear()  # an empty record removes the file
            restore(dict(original))
            return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The record, read and pruned of dead holders under an exclusive lock, and written back after."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, exceptions included
            try:
                record: dict[str, Any] = json.loads(self.path.read_text())
            except FileNotFoundError:
                record = {}
            except (OSError, ValueError) as exc:
                log.warning("the KSM holders' record %s is unreadable (%s): starting a new one", self.path, exc)
                record = {}
            if not isinstance(record, dict):
                record = {}
            record["holders"] = [h for h in record.get("holders", []) if isinstance(h, str) and _alive(h)]
            yield record
            if record:
                temporary = self.path.with_name(self.path.name + ".new")
                temporary.write_text(json.dumps(record))
                temporary.replace(self.path)
            else:
                self.path.unlink(missing_ok=True)


def _alive(token: str) -> bool:
    pid, _, rest = token.partition(":")
    started = rest.partition(":")[0]
    return pid.isdigit() and _started(int(pid)) == started


def claims_path(directory: Path) -> Path:
    """Where the holders of the KSM knobs in ``directory`` are recorded: /run for the real ones."""
    if directory == KSM_DIR:
        return Path("/run/yunstack/ksm-claims.json")
    return directory.parent / f".{directory.name}-claims.json"  # a test's stand-in for sysfs


class KsmControl:
    """The KSM knobs.  ``snapshot`` joins the machine's holders; ``restore`` leaves, the last one out
    writing back what the machine had (``KsmClaims``).

    ``apply`` is idempotent: it reads every knob back from sysfs (three small reads) and writes the
    ones that differ, so a knob another process changed is put back at the next period instead of
    being lost.  Such changes are listed in ``foreign`` (the manager adds them to the ledger's reasons).
    """

    def __init__(self, directory: Path = KSM_DIR, claims: KsmClaims | None = None) -> None:
        self.directory = directory
        self.claims = claims if claims is not None else KsmClaims(claims_path(directory))
        self._original: dict[str, str] | None = None
        self._token: str | None = None
        self._current: dict[str, str] = {}
        self.foreign: list[str] = []

    @property
    def available(self) -> bool:
        return (self.directory / "run").exists() and os.access(self.directory / "run", os.W_OK)

    def snapshot(self) -> dict[str, str]:
        """The machine's values before any yunstack process changed them; joins the holders once."""
        if self._original is None:
            try:
                self._token, self._original = self.claims.join(self._read)
            except OSError as exc:  # no shared record: fall back to what we find ourselves
                log.warning("recording the KSM holders in %s failed: %s", self.claims.path, exc)
                self._original = self._read()
        return dict(self._original)

    def _read(self) -> dict[str, str]:
        return {k: (self.directory / k).read_text().strip() for k in _KSM_KNOBS}

    def apply(self, settings: KsmSettings) -> bool:
        """Write the knobs whose sysfs value differs from ``settings``; True if anything was written."""
        self.snapshot()
        wanted = {"pages_to_scan": str(settings.pages_to_scan),
                  "sleep_millisecs": str(settings.sleep_millisecs), "run": str(settings.run)}
        self.foreign = []
        changed = False
        for knob, value in wanted.items():  # scan rate first, then run
            try:
                found: str | None = (self.directory / knob).read_text().strip()
            except OSError:
                found = None
            mine = self._current.get(knob)
            if mine is not None and found is not None and found != mine:
                self.foreign.append(f"KSM {knob} was changed from {mine} to {found} by another process")
            if found == value:
                self._current[knob] = value
                continue
            self._write(knob, value)
            changed = True
        return changed

    def restore(self) -> None:
        """Leave the holders; the last one out puts back the machine's values (run last, so no burst
        at our scan rate).  A holder that is not the last leaves the knobs to the others."""
        if self._original is None:
            return
        original, token = self._original, self._token
        self._original = self._token = None
        if token is not None:
            try:
                self.claims.leave(token, self._put_back, original)
            except OSError as exc:  # no shared record: restore what we found ourselves
                log.warning("leaving the KSM holders in %s failed: %s", self.claims.path, exc)
                self._put_back(original)
        else:
            self._put_back(original)
        self._current.clear()

    def _put_back(self, original: dict[str, str]) -> None:
        for knob in ("pages_to_scan", "sleep_millisecs", "run"):
            if knob in original:  # a record another version wrote may lack one
                with contextlib.suppress(DriverError):
                    self._write(knob, original[knob])

    def _write(self, knob: str, value: str) -> None:
        try:
            (self.directory / knob).write_text(value)
        except OSError as exc:
            raise DriverError(detail=f"writing KSM {knob}={value}: {exc.strerror or exc}") from exc
        self._current[knob] = value


class SwapControl:
    """A swapfile of ``size_bytes`` at ``directory/yunstack.swap`` that only yunstack uses and removes."""

    def __init__(self, directory: Path, size_bytes: int, priority: int = 0, *,
                 timeout: float = 300.0) -> None:
        self.path = directory / "yunstack.swap"
        self.size_bytes = size_bytes
        self.priority = priority
        self.timeout = timeout

    def active(self) -> bool:
        """True when our file is in /proc/swaps."""
        try:
            lines = Path("/proc/swaps").read_text().splitlines()[1:]
        except OSError:
            return False
        target = str(self.path.resolve())
        return any(line.split()[0] == target for line in lines if line.split())

    async def enable(self) -> None:
        """Create, format and swap on the file (idempotent)."""
        if self.active():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        mib = max(1, self.size_bytes >> 20)
        try:
            await self._run("fallocate", "-l", str(mib << 20), str(self.path))
        except DriverError:
            await self._run("dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={mib}", "status=none")
        self.path.chmod(0o600)
        await self._run("mkswap", "-q", str(self.path))
        try:
            await self._run("swapon", "-p", str(self.priority), str(self.path))
        except DriverError:  # some filesystems refuse fallocated swapfiles ("has holes"): write zeros
            await self._run("dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={mib}", "status=none")
            await self._run("mkswap", "-q", str(self.path))
            await self._run("swapon", "-p", str(self.priority), str(self.path))

    async def disable(self) -> None:
        """swapoff (pages come back into RAM) and remove the file (idempotent)."""
        if self.active():
            await self._run("swapoff", str(self.path))
        self.path.unlink(missing_ok=True)

    async def _run(self, *argv: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise DriverError(detail=f"cannot run {argv[0]}: {exc}") from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise DriverError(detail=f"{argv[0]} did not finish in {self.timeout}s") from exc
        if proc.returncode != 0:
            raise DriverError(detail=f"{' '.join(argv)} failed ({proc.returncode}): "
                                     f"{out.decode(errors='replace').strip()}")
