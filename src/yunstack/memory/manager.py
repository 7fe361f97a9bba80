"""``MemoryManager``: collect -> decide -> act every period, and keep a ledger of where memory went.

The host agent starts it next to its own loop (``await manager.run(stop_event)``).  Each ``tick``
samples the host and the running guests, runs the pure policy (``policy.step``), applies balloon
targets, cgroup settings and KSM knobs, and appends one ``LedgerEntry`` to a bounded in-memory
history (``ledger()``).  One guest failing to answer never stops the others; a host whose memory
statistics cannot be read stops the manager.  On shutdown the KSM knobs are restored, the
yunstack swapfile is removed and a budget is lifted (guests outlive the manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from yunstack.cgroups import MemoryCgroups, detect
from yunstack.compute.driver import MemoryBacking
from yunstack.errors import DriverError, YunError
from yunstack.memory import policy
from yunstack.memory.collectors import GuestCollector, HostCollector, HostUnreadable, Hypervisor
from yunstack.memory.controllers import CgroupControl, KsmControl, SwapControl
from yunstack.memory.model import (
    PAGE,
    Actions,
    GuestPolicy,
    GuestStats,
    History,
    HostStats,
    MemoryConfig,
    PressureLevel,
    Tuning,
    tuning_for,
)

log = logging.getLogger(__name__)


class ManagedHypervisor(Hypervisor, Protocol):
    """What the manager drives: the stats slice plus ``set_balloon_target`` and the memory templates'
    page cache (any ComputeDriver)."""

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        """Ask the guest's balloon to leave it ``target_bytes`` of RAM."""

    async def template_memory(self) -> dict[str, int]:
        """Template key -> bytes of its RAM file resident in the host page cache (shared by its clones)."""


@dataclass(frozen=True, kw_only=True)
class GuestLedger:
    """Where one VM's memory is, in bytes."""

    instance_id: str
    configured: int
    actual: int  # balloon logical size
    resident: int  # QEMU RSS (guest RAM touched + QEMU's own memory)
    ballooned: int  # configured - actual (logical: only what was resident frees host memory)
    shared: int  # host memory saved by KSM, attributed to this VM (see HostLedger.shared_method)
    swapped: int  # host swap holding this VM's memory
    working_set: int
    dirty_rate: int | None  # bytes/s (QEMU's sampling); what a live migration must outrun
    target: int
    entitlement: int
    pressured: bool
    page_sharing: bool
    thp: bool
    # A clone: the memory template its RAM file maps, and how much of its resident memory is that
    # template's page cache (counted once for the host, in HostLedger.templates) rather than its own:
    # RSS - Anonymous, None when its process could not be read.
    template: str | None = None
    template_shared: int | None = None


@dataclass(frozen=True, kw_only=True)
class TemplateLedger:
    """One memory template's RAM file in the host's page cache, shared by its clones."""

    key: str
    resident: int  # bytes of the RAM file in the page cache (mincore), counted once for the host
    clones: int  # running guests that map it


@dataclass(frozen=True, kw_only=True)
class HostLedger:
    """The host's memory balance for one period."""

    physical: int  # capacity: the budget, else MemTotal
    committed: int  # sum of configured guest RAM
    guests_resident: int  # sum of QEMU RSS
    guests_used: int  # host memory the guests really cost: resident - KSM saving, template page cache once
    consolidation_ratio: float  # committed / guests_used
    savings_ksm: int
    savings_balloon: int  # logical
    savings_swap: int
    shared_method: str  # "ksm_stat" | "proportional-rss" | "none"
    ksm_pages_sharing: int
    ksm_run: int
    available: int
    swap_free: int
    psi_some_avg10: float
    # Bytes per second the host swapped in and out since the previous period (/proc/vmstat);
    # None in the first period or when unreadable.  A host that swaps takes no guest from the balancer.
    swap_in_rate: float | None = None
    swap_out_rate: float | None = None
    # policy.admission_room: free + what ballooning could take back - regrowth - reserve.  The control
    # plane's ObservedMemoryFilter admits a new guest only if its expected need fits in this.
    admission_room: int = 0
    admission_blocked: str | None = None
    # Memory templates: each one's RAM file in the page cache with its number of clones, and the total.
    templates: tuple[TemplateLedger, ...] = ()
    templates_resident: int = 0


def swap_rates(before: HostStats | None, now: HostStats) -> tuple[float | None, float | None]:
    """Bytes per second swapped (in, out) between two host samples; None without both counters."""
    if before is None or now.timestamp <= before.timestamp:
        return None, None
    seconds = now.timestamp - before.timestamp

    def rate(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else max(0, b - a) / seconds

    return rate(before.swapped_in, now.swapped_in), rate(before.swapped_out, now.swapped_out)


@dataclass(frozen=True, kw_only=True)
class ManagerCost:
    """What the manager itself cost this tick."""

    tick_seconds: float
    cpu_seconds: float  # this thread's CPU time in the tick
    rss_bytes: int  # the whole process (the agent's), for the trend


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One period of the ledger."""

    wall_time: float
    timestamp: float
    level: PressureLevel
    host: HostLedger
    guests: tuple[GuestLedger, ...]
    manager: ManagerCost
    errors: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API and CLI render this)."""
        data = asdict(self)
        data["level"] = self.level.name.lower()
        return data


def memory_backing(policy_: GuestPolicy, level: PressureLevel = PressureLevel.NONE) -> MemoryBacking:
    """How the driver backs a guest's RAM at its next (re)start, for this policy.

    THP stays on only for a guest that may not share pages, while memory is not under pressure:
    KSM splits huge pages anyway, and THP makes reclaim coarse when memory is short.  A guest that may
    not share pages is never started from a memory template (the driver checks): its clones share
    the template's pages.
    """
    thp = policy_.thp if policy_.thp is not None else (not policy_.page_sharing and level == PressureLevel.NONE)
    # ``template`` is what the server asked for (its devices are laid out for it either way); the
    # driver starts it from one only while it may share pages.
    return MemoryBacking(page_sharing=policy_.page_sharing, thp=thp, template=policy_.template)


def template_lines(host: HostStats, guests: Sequence[GuestStats]) -> tuple[TemplateLedger, ...]:
    """The host's ``templates`` lines: every template the driver reports or a clone maps, by key."""
    keys = sorted(set(host.templates) | {g.template for g in guests if g.template is not None})
    return tuple(TemplateLedger(key=key, resident=host.templates.get(key, 0),
                                clones=sum(1 for g in guests if g.template == key)) for key in keys)


def template_shared(g: GuestStats) -> int | None:
    """A clone's resident pages that are not its own: its file-backed RSS (RSS - Anonymous), i.e. the
    template RAM it never wrote, plus QEMU's binary and libraries (a few MiB, shared by every QEMU)."""
    if g.template is None or g.anonymous is None:
        return None
    return max(0, g.rss - g.anonymous)


def counted_once(templates: Sequence[TemplateLedger], guests: Sequence[GuestStats]) -> int:
    """What counting each template's page cache once instead of in every clone's RSS changes in the host's
    use: + each template's resident bytes - its clones' shared bytes.  Only for templates whose clones
    could all be read (otherwise their RSS stays counted as it is)."""
    change = 0
    for t in templates:
        shared = [template_shared(g) for g in guests if g.template == t.key]
        if shared and all(s is not None for s in shared):
            change += t.resident - sum(s or 0 for s in shared)
    return change


def attribute_sharing(host: HostStats, guests: Sequence[GuestStats],
                      policies: Mapping[str, GuestPolicy]) -> tuple[dict[str, int], str]:
    """KSM saving per VM, and how it was estimated.

    ``ksm_stat``: the kernel counts each process's pages mapped to KSM pages (``ksm_merging_pages``);
    host-wide those add up to pages_shared + pages_sharing, of which pages_sharing are saved, so a
    VM is credited merging * sharing / (shared + sharing) pages, plus its ``ksm_zero_pages``.  Other
    processes' merging is thereby left out.  Without per-process counters, the host's pages_sharing
    is split over the VMs that allow sharing in proportion to their RSS (an over-estimate when
    other processes merge too).
    """
    ksm = host.ksm
    allowed = [g for g in guests if policies.get(g.instance_id, GuestPolicy()).page_sharing]
    if ksm.pages_sharing <= 0 and ksm.zero_pages <= 0:
        return {g.instance_id: 0 for g in guests}, "none"
    shares = {g.instance_id: 0 for g in guests}
    merging_total = ksm.pages_shared + ksm.pages_sharing
    if guests and all(g.ksm_merging_pages is not None for g in guests):
        for g in guests:
            pages = (g.ksm_merging_pages or 0) * ksm.pages_sharing / merging_total if merging_total else 0.0
            shares[g.instance_id] = int(pages * PAGE) + (g.ksm_zero_pages or 0) * PAGE
        return shares, "ksm_stat"
    rss_total = sum(g.rss for g in allowed)
    for g in allowed:
        if rss_total:
            shares[g.instance_id] = int(ksm.pages_sharing * PAGE * g.rss / rss_total)
    return shares, "proportional-rss"


class MemoryManager:
    """The per-host memory overcommit loop: KSM, ballooning, per-VM cgroups, host swap, a ledger."""

    def __init__(self, hypervisor: ManagedHypervisor, config: MemoryConfig, *,
                 state_dir: Path | None = None, policies: MutableMapping[str, GuestPolicy] | None = None,
                 tuning: Tuning | None = None, cgroups: MemoryCgroups | None = None, detect_cgroups: bool = True,
                 host_collector: HostCollector | None = None, ksm: KsmControl | None = None,
                 proc: Path = Path("/proc")) -> None:
        self.hypervisor = hypervisor
        self.config = config
        self.tuning = tuning or tuning_for(config)
        self.policies: MutableMapping[str, GuestPolicy] = policies if policies is not None else {}
        if cgroups is None and detect_cgroups and config.cgroup_parent:
            cgroups = detect()
        self.cgroups = CgroupControl(cgroups, config.cgroup_parent)
        self.host_collector = host_collector or HostCollector(
            proc=proc, cgroups=cgroups, budget_cgroup=config.cgroup_parent or None)
        self.guest_collector = GuestCollector(hypervisor, proc=proc, cgroups=cgroups,
                                              cgroup_parent=config.cgroup_parent)
        self.ksm = ksm if ksm is not None else (KsmControl() if self.tuning.ksm_mode != "never" else None)
        self.swap: SwapControl | None = None
        if config.swapfile_bytes > 0:
            directory = Path(config.swap_dir) if config.swap_dir else (state_dir or Path(".")) / "memory"
            self.swap = SwapControl(directory, config.swapfile_bytes, config.swap_priority)
        self.history = History()
        self.last_actions: Actions | None = None
        keep = max(1, int(config.history_seconds / max(self.tuning.period, 0.1)))
        self._ledger: deque[LedgerEntry] = deque(maxlen=keep)
        self._started = False
        self._foreign: list[str] = []
        self._pending = 0  # bytes reserved for guests about to start (room_for); the policy sees them used
        self._last_host: HostStats | None = None  # the last raw sample, without _pending
        self._last_guests: Sequence[GuestStats] = ()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the parent cgroup (and budget), the swapfile, and record the KSM knobs."""
        if self._started:
            return
        if self.cgroups.available:
            try:
                self.cgroups.prepare(self.config.budget_bytes, self.config.budget_swap_bytes)
            except DriverError as exc:
                log.warning("memory cgroups unavailable: %s", exc.text)
                self.cgroups = CgroupControl(None, "")
        if self.swap is not None:
            await self.swap.enable()
        if self.ksm is not None and self.ksm.available:
            self.ksm.snapshot()
        self._started = True

    async def close(self) -> None:
        """Restore KSM, remove our swapfile, lift the budget, remove an unused parent cgroup; guests keep running."""
        if self.ksm is not None:
            self.ksm.restore()
        if self.swap is not None:
            try:
                await self.swap.disable()
            except DriverError as exc:
                log.error("removing the yunstack swapfile failed: %s", exc.text)
        if self.config.budget_bytes > 0:
            with contextlib.suppress(DriverError):
                self.cgroups.release_budget()
        # With no guest left, nothing of ours stays in the cgroup tree; the next start makes it again.
        with contextlib.suppress(DriverError, OSError):
            self.cgroups.remove_if_unused()
        self._started = False

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every period (the policy's: shorter during a spike) until ``stop`` is set; always cleans up."""
        await self.start()
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await self.tick()
                except HostUnreadable:
                    raise
                except (YunError, OSError) as exc:
                    log.warning("memory manager tick failed: %s", exc)
                period = self.last_actions.period if self.last_actions is not None else self.tuning.period
                remaining = period - (time.monotonic() - began)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(remaining, 0.05))
        finally:
            await self.close()

    # -- one period --------------------------------------------------------------------------

    async def tick(self) -> LedgerEntry:
        """Collect, decide, act once; return (and keep) the ledger entry."""
        if not self._started:
            await self.start()
        began, cpu0 = time.monotonic(), time.thread_time()
        raw = self.host_collector.collect()
        guests, errors = await self.guest_collector.collect()
        try:
            raw = replace(raw, templates=await self.hypervisor.template_memory())
        except (YunError, OSError) as exc:
            errors["templates"] = exc.text if isinstance(exc, YunError) else str(exc)
        previous, self._last_host, self._last_guests = self._last_host, raw, guests
        host = policy.with_claims(raw, self._pending)
        actions, self.history = policy.step(host, guests, self.policies, self.history, self.tuning)
        self.last_actions = actions
        problems = [f"{iid}: {why}" for iid, why in sorted(errors.items())]
        problems += await self._act(actions)
        entry = self._entry(host, guests, actions, problems, began, cpu0, swap_rates(previous, raw))
        self._ledger.append(entry)
        return entry

    async def _act(self, actions: Actions) -> list[str]:
        problems: list[str] = []
        for d in actions.guests:
            if d.send:
                try:
                    await self.hypervisor.set_balloon_target(d.instance_id, d.target)
                except YunError as exc:
                    problems.append(f"{d.instance_id}: balloon: {exc.text}")
            try:
                self.cgroups.apply(d.instance_id, d.cgroup)
            except DriverError as exc:
                problems.append(f"{d.instance_id}: cgroup: {exc.text}")
        self._foreign = []
        if actions.ksm is not None and self.ksm is not None and self.ksm.available:
            try:
                self.ksm.apply(actions.ksm)  # reads the knobs back and re-applies what someone changed
            except DriverError as exc:
                problems.append(f"ksm: {exc.text}")
            self._foreign = list(self.ksm.foreign)
            for note in self._foreign:
                log.warning("memory manager: %s; re-applied", note)
        for p in problems:
            log.warning("memory manager: %s", p)
        return problems

    def _entry(self, host: HostStats, guests: Sequence[GuestStats], actions: Actions, problems: list[str],
               began: float, cpu0: float, swap: tuple[float | None, float | None]) -> LedgerEntry:
        shared, method = attribute_sharing(host, guests, self.policies)
        rows = []
        for g in guests:
            d = actions.guest(g.instance_id)
            swapped = g.swap if g.swap is not None else (g.cgroup_swap or 0)
            rows.append(GuestLedger(
                instance_id=g.instance_id, configured=g.configured, actual=g.balloon_actual, resident=g.rss,
                ballooned=g.ballooned, shared=shared[g.instance_id], swapped=swapped, working_set=d.working_set,
                dirty_rate=g.dirty_rate,
                target=d.target, entitlement=d.entitlement, pressured=d.pressured, page_sharing=d.page_sharing,
                thp=d.thp, template=g.template, template_shared=template_shared(g)))
        resident = sum(r.resident for r in rows)
        saved = sum(r.shared for r in rows)
        templates = template_lines(host, guests)
        used = max(resident - saved + counted_once(templates, guests), 1)
        committed = sum(r.configured for r in rows)
        room = policy.admission_room(host, guests, self.policies, self.history, self.tuning)
        host_row = HostLedger(
            physical=host.capacity, committed=committed, guests_resident=resident, guests_used=used,
            consolidation_ratio=round(committed / used, 3) if rows else 0.0, savings_ksm=saved,
            savings_balloon=sum(r.ballooned for r in rows), savings_swap=sum(r.swapped for r in rows),
            shared_method=method, ksm_pages_sharing=host.ksm.pages_sharing, ksm_run=host.ksm.run,
            available=host.headroom, swap_free=host.swap_free, psi_some_avg10=host.psi_some_avg10,
            admission_room=room.room, admission_blocked=room.blocked, swap_in_rate=swap[0], swap_out_rate=swap[1],
            templates=templates, templates_resident=sum(t.resident for t in templates))
        cost = ManagerCost(tick_seconds=time.monotonic() - began, cpu_seconds=time.thread_time() - cpu0,
                           rss_bytes=_self_rss())
        return LedgerEntry(wall_time=time.time(), timestamp=host.timestamp, level=actions.level, host=host_row,
                           guests=tuple(rows), manager=cost, errors=tuple(problems),
                           reasons=actions.reasons + tuple(f"{n}; re-applied" for n in self._foreign))

    # -- making room for a new guest -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def room_for(self, memory_bytes: int, timeout: float) -> AsyncIterator[bool]:
        """Reserve a new guest's expected footprint while it starts; yields whether the room is there.

        The admission room counts page cache the balloons could take back (``policy.admission_room``),
        but a guest that starts faster than balloons inflate would meet a full host.  So, the way a
        scheduler claims before it places, the footprint is first counted as used: the policy sees
        the pressure and reclaims from idle guests, and the caller goes on once the memory is really
        free (or after ``timeout``, with a warning: the scheduler admitted the guest, and the manager
        goes on reclaiming while it boots).  The reservation ends when the block does.
        """
        need = policy.expected_footprint(self._last_guests, memory_bytes, self.tuning)
        self._pending += need
        try:
            deadline = time.monotonic() + timeout
            made = self._room_made()
            while not made and self._started and time.monotonic() < deadline:
                await asyncio.sleep(min(self.tuning.spike_period, max(0.05, deadline - time.monotonic())))
                made = self._room_made()
            if not made:
                log.warning("memory manager: no room for %d MiB after %.0fs; starting the guest anyway",
                            need >> 20, timeout)
            yield made
        finally:
            self._pending -= need

    def _room_made(self) -> bool:
        """Every pending claim fits the memory free now (several guests may start at once).  Without a
        sample yet (the manager has not ticked) there is nothing to wait for."""
        return self._last_host is None or policy.room_made(self._last_host, self._pending, self.tuning)

    # -- reading -----------------------------------------------------------------------------

    def ledger(self, since: float | None = None) -> list[LedgerEntry]:
        """The kept history, oldest first; only entries with ``wall_time`` after ``since`` if given."""
        return [e for e in self._ledger if since is None or e.wall_time > since]

    def latest(self) -> LedgerEntry | None:
        return self._ledger[-1] if self._ledger else None

    # -- policies ----------------------------------------------------------------------------

    def set_policy(self, instance_id: str, policy_: GuestPolicy) -> None:
        self.policies[instance_id] = policy_

    def forget(self, instance_id: str) -> None:
        """Drop what is kept about a deleted VM."""
        self.policies.pop(instance_id, None)
        self.cgroups.forget(instance_id)

    def memory_backing(self, instance_id: str) -> MemoryBacking:
        """Page sharing and THP for this VM's next (re)start."""
        return memory_backing(self.policies.get(instance_id, GuestPolicy()), self.history.level)


def _self_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
