"""The five arms, each re-implemented against the budget cgroup (design §9.4).

Every arm has the same shape: ``admits(committed, next)`` for admission and ``tick(host, guests) ->
ArmActions`` for its runtime policy, called every ``period`` seconds with the same collectors'
snapshots (``yunstack.memory.collectors``), whose "host memory" is the budget cgroup (MoM, ksmtuned
and Proxmox read ``/proc/meminfo``, which would see the whole 24 GiB box).

- A0 no overcommit: admit while Σ(configured + measured per-VM overhead) ≤ B; no runtime policy.
- A1 Nova static ratio: admit while Σ configured ≤ ratio x (B - reserved), ratio 1.5, reserved 512 MiB
  (``ram_allocation_ratio``, ``reserved_host_memory_mb``); no runtime policy.
- A2 KSM only: ksmtuned / MoM ``ksm.rules`` with their constants, MemTotal replaced by B.
- A3 balloon only: Proxmox ``AutoBalloon`` (80 % target, ≤ 100 MiB per VM per 10 s round, shares 1000,
  floor = 50 % of max).  Proxmox rather than MoM: MoM's ≤ 5 % per 15 s cannot move within a ramp step.
- A4 yunstack: ``yunstack.memory.policy.step`` with the product defaults (KSM + balloon + cgroup
  settings; THP off and page sharing on for guests that may share, as ``MemoryManager.memory_backing``),
  and the product's admission: ``policy.admission`` on the observed budget (the scheduler's
  ObservedMemoryFilter), so its ramp stops before an OOM instead of at one.
- A4T yunstack with memory templates: A4, its guests asking for a memory template
  (``GuestPolicy.template``): the first boots, the host makes the template beside it, and every later
  guest starts from it (docs/explanation/memory-templates.md).  The template's page cache is charged
  to the budget (the runner adds it to the budget's usage): it is memory these guests cost, though
  the template guest that wrote it ran outside the budget cgroup.

Arms that must not merge pages start their guests with ``mem-merge=off``: a foreign ksmd (other
sessions on this box run KSM) then cannot help them, and no global KSM knob has to change for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yunstack.compute.driver import MemoryBacking
from yunstack.memory import policy
from yunstack.memory.manager import memory_backing
from yunstack.memory.model import (
    MIB,
    CgroupSetting,
    GuestPolicy,
    GuestStats,
    History,
    HostStats,
    KsmSettings,
    Tuning,
)

ARM_NAMES = ("A0", "A1", "A2", "A3", "A4", "A4R", "A4T")


@dataclass(frozen=True, kw_only=True)
class ArmActions:
    """What one arm decided this period; empty means "leave everything as it is"."""

    balloon: dict[str, int] = field(default_factory=dict)  # instance id -> target bytes
    ksm: KsmSettings | None = None
    cgroups: dict[str, CgroupSetting] = field(default_factory=dict)
    note: str = ""


class Arm:
    """Base: admits everything (ramp to failure) and does nothing at runtime."""

    name = "arm"
    title = "arm"
    period = 0.0  # seconds between ticks; 0 = no runtime policy
    uses_ksm = False  # the runner snapshots and restores the KSM knobs only for these
    observed_admission = False  # admits() reads the live host/guests (re-asked once after a settle)
    templates = False  # guests ask for a memory template; the runner waits for it and charges its page cache
    last_admission = ""

    def memory(self) -> MemoryBacking:
        """How this arm's guests' RAM is backed (page sharing / THP)."""
        return MemoryBacking(page_sharing=False)

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        return True

    def tick(self, host: HostStats, guests: Sequence[GuestStats]) -> ArmActions:
        return ArmActions()

    def claim(self, guests: Sequence[GuestStats], next_bytes: int) -> int:
        """Bytes to count as used before the next guest starts (make room first); 0 = start at once."""
        return 0

    def room_made(self, host: HostStats, claim: int) -> bool:
        return True

    def constants(self) -> dict[str, object]:
        return {}


class NoOvercommit(Arm):
    """A0: Σ (configured + measured per-VM overhead) ≤ B."""

    name, title = "A0", "A0 no overcommit"

    def __init__(self, budget: int, overhead: int) -> None:
        self.budget = budget
        self.overhead = overhead

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        return sum(c + self.overhead for c in committed) + next_bytes + self.overhead <= self.budget

    def constants(self) -> dict[str, object]:
        return {"overhead_mib": self.overhead / MIB}


class StaticRatio(Arm):
    """A1: Σ configured ≤ ratio x (B - reserved), Nova's placement capacity."""

    name, title = "A1", "A1 Nova ratio 1.5"

    def __init__(self, budget: int, ratio: float = 1.5, reserved: int = 512 * MIB) -> None:
        self.budget = budget
        self.ratio = ratio
        self.reserved = reserved

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        return sum(committed) + next_bytes <= self.ratio * (self.budget - self.reserved)

    def constants(self) -> dict[str, object]:
        return {"ram_allocation_ratio": self.ratio, "reserved_host_memory_mib": self.reserved / MIB}


class KsmOnly(Arm):
    """A2: ksmtuned / MoM ``ksm.rules``: 20 % threshold, +300 / -50 pages, [64, 1250], 10 ms x 16 GiB / B.

    KSM runs when free < threshold or when threshold + Σ QEMU VSZ ("ksm_shareable") ≥ B; otherwise it
    is stopped (run=0 keeps what was merged).  Period 10 s (MoM's standalone policy interval).
    """

    name, title = "A2", "A2 KSM only"
    period = 10.0
    uses_ksm = True
    thres_coef, boost, decay, min_pages, max_pages, sleep_ms = 0.20, 300, -50, 64, 1250, 10

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self.npages: int | None = None

    def memory(self) -> MemoryBacking:
        return MemoryBacking()  # stock QEMU: mergeable guest RAM, host THP default

    def _vsz(self, g: GuestStats) -> int:
        try:
            for line in (self.proc / str(g.pid) / "status").read_text().splitlines():
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return g.configured

    def tick(self, host: HostStats, guests: Sequence[GuestStats]) -> ArmActions:
        total = host.capacity
        free = host.headroom
        thres = self.thres_coef * total
        shareable = sum(self._vsz(g) for g in guests)
        if self.npages is None:
            self.npages = min(self.max_pages, max(self.min_pages, host.ksm.pages_to_scan))
        sleep = max(self.sleep_ms, round(self.sleep_ms * 16 * 1024 * MIB / max(total, 1)))
        if thres + shareable < total and free > thres:
            return ArmActions(ksm=KsmSettings(run=0, pages_to_scan=self.npages, sleep_millisecs=sleep),
                              note="ksm stopped")
        self.npages = min(self.max_pages, max(self.min_pages,
                                              self.npages + (self.boost if free < thres else self.decay)))
        return ArmActions(ksm=KsmSettings(run=1, pages_to_scan=self.npages, sleep_millisecs=sleep),
                          note=f"ksm {self.npages} pages / {sleep} ms")

    def constants(self) -> dict[str, object]:
        return {"thres_coef": self.thres_coef, "npages_boost": self.boost, "npages_decay": self.decay,
                "npages_min": self.min_pages, "npages_max": self.max_pages,
                "sleep_ms": "10 x 16 GiB / B", "period_s": self.period, "source": "ksmtuned.conf; mom ksm.rules"}


class BalloonOnly(Arm):
    """A3: Proxmox ``PVE::AutoBalloon::compute_alg1`` as run by pvestatd every 10 s.

    Keep the budget at 80 % used: goal = 0.8 B - used; nothing when |goal| ≤ 10 MiB.  The pool every
    guest may hold above its floor (50 % of max) is split by shares (1000 each); each guest moves at
    most 100 MiB per round.  Growing favours guests under pressure (free ≤ 25 % of the floor),
    shrinking favours guests with free > 25 % of the floor.
    """

    name, title = "A3", "A3 balloon only (Proxmox)"
    period = 10.0
    target, dead_band, max_step, min_fraction, shares = 0.80, 10 * MIB, 100 * MIB, 0.5, 1000

    def tick(self, host: HostStats, guests: Sequence[GuestStats]) -> ArmActions:
        used = host.capacity - host.headroom
        goal = int(self.target * host.capacity) - used
        usable = [g for g in guests if g.guest_total is not None]
        if abs(goal) <= self.dead_band or not usable:
            return ArmActions(note=f"goal {goal // MIB} MiB: hold")
        floors = {g.instance_id: int(self.min_fraction * g.configured) for g in usable}

        def pressured(g: GuestStats) -> bool:
            return g.guest_free is not None and g.guest_free <= 0.25 * floors[g.instance_id]

        if goal > 0:
            order = sorted(usable, key=lambda g: not pressured(g))
            room = {g.instance_id: g.configured - g.balloon_actual for g in order}
        else:
            order = sorted(usable, key=lambda g: pressured(g))
            room = {g.instance_id: g.balloon_actual - floors[g.instance_id] for g in order}
        remaining = abs(goal)
        moves: dict[str, int] = {}
        candidates = [g for g in order if room[g.instance_id] > 0]
        while remaining > MIB and candidates:  # shares-weighted split, redistributing what hits a bound
            share = remaining // len(candidates)  # equal shares (1000 each)
            progressed = 0
            for g in list(candidates):
                iid = g.instance_id
                limit = min(room[iid], self.max_step - moves.get(iid, 0))
                step = min(share, limit)
                moves[iid] = moves.get(iid, 0) + step
                room[iid] -= step
                progressed += step
                if step >= limit:
                    candidates.remove(g)
            remaining -= progressed
            if progressed == 0:
                break
        sign = 1 if goal > 0 else -1
        targets = {g.instance_id: g.balloon_actual + sign * moves[g.instance_id]
                   for g in usable if moves.get(g.instance_id, 0) >= MIB}
        return ArmActions(balloon=targets, note=f"goal {goal // MIB} MiB, {len(targets)} balloons")

    def constants(self) -> dict[str, object]:
        return {"ballooning_target": self.target, "max_step_mib_per_round": self.max_step / MIB,
                "dead_band_mib": self.dead_band / MIB, "balloon_min_fraction": self.min_fraction,
                "shares": self.shares, "period_s": self.period, "source": "pve-manager PVE/AutoBalloon.pm"}


class Yunstack(Arm):
    """A4: the memory manager's pure policy (``policy.step``) with the product's ``Tuning``."""

    name, title = "A4", "A4 yunstack"
    uses_ksm = True
    observed_admission = True

    def __init__(self, tuning: Tuning | None = None, guest_policy: GuestPolicy | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.period = self.tuning.period
        self.history = History()
        self.policy = guest_policy or GuestPolicy()

    def memory(self) -> MemoryBacking:
        return memory_backing(self.policy)

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        if host is None:
            return True
        ok, self.last_admission = policy.admission(host, guests, self.history, next_bytes, self.tuning)
        return ok

    def claim(self, guests: Sequence[GuestStats], next_bytes: int) -> int:
        """The product's ``MemoryManager.room_for``: claim the expected footprint before starting."""
        return policy.expected_footprint(guests, next_bytes, self.tuning)

    def room_made(self, host: HostStats, claim: int) -> bool:
        return policy.room_made(host, claim, self.tuning)

    def tick(self, host: HostStats, guests: Sequence[GuestStats]) -> ArmActions:
        actions, self.history = policy.step(host, guests, {}, self.history, self.tuning)
        self.period = actions.period  # 1 s during a spike
        return ArmActions(balloon={d.instance_id: d.target for d in actions.guests if d.send}, ksm=actions.ksm,
                          cgroups={d.instance_id: d.cgroup for d in actions.guests},
                          note="; ".join(actions.reasons))

    def constants(self) -> dict[str, object]:
        t = self.tuning
        return {"period_s": t.period, "ksm_free_fraction": t.ksm_free_fraction,
                "balloon_free_fraction": t.balloon_free_fraction, "swap_free_fraction": t.swap_free_fraction,
                "target_free_fraction": t.target_free_fraction, "idle_tax": t.idle_tax,
                "headroom_fraction": t.headroom_fraction, "min_guest_mib": t.min_guest_bytes / MIB,
                "max_step_mib": t.max_step_bytes / MIB, "ksm_target_scan_s": t.ksm_target_scan_seconds,
                "ksm_boost_periods": t.ksm_boost_periods, "fast_reclaim_fraction": t.fast_reclaim_fraction,
                "spike_period_s": t.spike_period, "admission_free_fraction": t.admission_free_fraction,
                "free_page_reporting": t.free_page_reporting,
                "memory": {"page_sharing": self.memory().page_sharing, "thp": self.memory().thp,
                           "template": self.memory().template},
                "source": "yunstack.memory.policy (Tuning defaults)"}


class YunstackRamp(Yunstack):
    """A4R: A4's runtime policy, ramped to failure like A2 and A3 (the design's §9.4 has no admission
    for A4): how many guests the mechanisms hold, apart from how many the admission rule would let in."""

    name, title = "A4R", "A4 yunstack, ramp to failure"
    observed_admission = False

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        return True

    def claim(self, guests: Sequence[GuestStats], next_bytes: int) -> int:
        return 0


class YunstackTemplates(Yunstack):
    """A4T: A4 with its guests started from a memory template of their image and flavor shape."""

    name, title = "A4T", "A4 yunstack with memory templates"
    templates = True

    def __init__(self, tuning: Tuning | None = None) -> None:
        super().__init__(tuning, GuestPolicy(template=True))

    def admits(self, committed: Sequence[int], next_bytes: int, host: HostStats | None = None,
               guests: Sequence[GuestStats] = ()) -> bool:
        if host is None:
            return True
        ok, self.last_admission = policy.admission(host, guests, self.history, next_bytes, self.tuning,
                                                   template=_template(guests))
        return ok

    def claim(self, guests: Sequence[GuestStats], next_bytes: int) -> int:
        return policy.expected_footprint(guests, next_bytes, self.tuning, _template(guests))


def _template(guests: Sequence[GuestStats]) -> str | None:
    """The template the next guest starts from: the one the clones here map (every guest of a run has
    the same shape, so once a clone runs, the host has the template the next guest asks for)."""
    return next((g.template for g in guests if g.template is not None), None)


def make_arm(name: str, *, budget: int, overhead: int) -> Arm:
    """A fresh arm (arms keep state between ticks: one per run)."""
    arms: dict[str, Arm] = {"A0": NoOvercommit(budget, overhead), "A1": StaticRatio(budget),
                            "A2": KsmOnly(), "A3": BalloonOnly(), "A4": Yunstack(), "A4R": YunstackRamp(),
                            "A4T": YunstackTemplates()}
    try:
        return arms[name]
    except KeyError:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARM_NAMES)}") from None
