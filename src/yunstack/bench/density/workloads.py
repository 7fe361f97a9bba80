"""Guest workloads as ``user_data`` scripts that drive ``memload`` in the tiny image (design §9.3).

- **W0 idle**: boot, nothing else.
- **W1 steady WSS**: ``wss`` MiB touched once every ``period`` s.  With pattern ``seeded`` a fraction
  ``dup`` is filled from a seed shared by every guest (identical across guests: KSM can merge it
  while it is not being rewritten) and the rest from the guest's own seed; ``same`` makes every page
  identical, ``random`` makes every page unique and rewritten on each touch.
- **W2 bursty**: alternates ``low``/``high`` MiB (``low_s``/``high_s`` seconds) with a per-guest phase
  offset, so the mean fits a budget that the synchronized peak would not.
- **W3 cache-heavy**: writes ``cache_mib`` of guest-unique data to its disk once (clean page cache the
  guest keeps, as a booted distro guest keeps what it read) and runs a small W1.  The design's W3
  re-reads its file; ours reads it once, so the cache is cold, which is what an idle service VM holds.
- **WS spike**: memload writes ``cache_mib`` of guest-unique data to the scratch disk and fsyncs it
  (clean page cache the guest can drop) and keeps a small W1 running: what a balloon takes back quickly.

Every memload line reports the touch rate of the last interval; the requested rate is ``mib /
period``, so ``rate / requested`` is the guest's throughput.  Seeds are fixed and published.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARED_SEED = 0x5EED  # the seed of the duplicate part, identical in every guest of every run


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One guest's workload: its script and what to expect from its console."""

    key: str  # workload class, e.g. "W1-64": solo baselines are measured per key
    kind: str  # W0 | W1 | W2 | WS
    user_data: str
    period: float = 0.0  # seconds per full touch pass; 0 = no memload
    wss_mib: int = 0  # mean resident working set the workload asks for
    started: str = ""  # a line the user_data prints when it starts (a workload without memload lines)

    @property
    def active(self) -> bool:
        return self.period > 0


def _memload(mib: int, pattern: str, seed: int, period: float, seconds: float = 0.0) -> str:
    rate = max(mib / period, 0.5)
    tail = f" --seconds {seconds:g}" if seconds else ""
    return f"memload --mib {mib} --pattern {pattern} --seed {seed} --touch-mib-per-s {rate:g}{tail}"


def idle() -> Workload:
    """W0."""
    return Workload(key="W0", kind="W0", user_data="#!/bin/sh\necho density-idle\n", started="density-idle")


def steady(wss_mib: int, *, guest_seed: int, dup: float = 0.5, pattern: str = "seeded",
           period: float = 8.0) -> Workload:
    """W1: ``wss_mib`` MiB, ``dup`` of it shared across guests (``seeded``), touched every ``period`` s."""
    if pattern not in ("same", "seeded", "random"):
        raise ValueError(f"unknown pattern {pattern!r}")
    if pattern == "seeded" and 0.0 < dup < 1.0:
        shared = max(1, round(wss_mib * dup))
        lines = [_memload(shared, "seeded", SHARED_SEED, period) + " &",
                 _memload(wss_mib - shared, "seeded", guest_seed, period) + " &"]
    else:
        seed = SHARED_SEED if (pattern == "same" or dup >= 1.0) else guest_seed
        lines = [_memload(wss_mib, pattern, seed, period) + " &"]
    return Workload(key=f"W1-{wss_mib}", kind="W1", user_data="#!/bin/sh\n" + "\n".join(lines) + "\n",
                    period=period, wss_mib=wss_mib)


def bursty(low_mib: int, high_mib: int, *, guest_seed: int, low_s: float, high_s: float, offset_s: float,
           period: float = 8.0) -> Workload:
    """W2: low/high phases forever, the first low phase ``offset_s`` longer.

    The offset is spent in the low phase, not asleep: a guest that printed nothing while it waited
    would look stalled to the SLO check (which is what stopped every earlier mixed ramp at guest 11:
    guest 10's offset is 63 s).
    """
    first = _memload(low_mib, 'seeded', guest_seed, period, low_s + offset_s)
    script = (f"#!/bin/sh\n({first}; while true; do "
              f"{_memload(high_mib, 'seeded', guest_seed, period, high_s)}; "
              f"{_memload(low_mib, 'seeded', guest_seed, period, low_s)}; done) &\n")
    mean = (low_mib * low_s + high_mib * high_s) / (low_s + high_s)
    return Workload(key=f"W2-{low_mib}-{high_mib}", kind="W2", user_data=script, period=period,
                    wss_mib=round(mean))


def spike_guest(cache_mib: int, wss_mib: int, *, guest_seed: int, period: float = 8.0) -> Workload:
    """WS: ``cache_mib`` MiB of clean page cache plus a small W1.

    memload writes ``cache_mib`` MiB of pages unique to the guest (``--seed``) to the scratch disk
    past the image (offset 64 MiB) and fsyncs them, then runs the W1 loop: the guest holds that much
    clean, droppable page cache, which is neither free (so free page reporting has not returned it)
    nor duplicated (so KSM cannot take it).  Only a balloon gets it back quickly.
    """
    rate = max(wss_mib / period, 0.5)
    script = (f"#!/bin/sh\nmemload --mib {wss_mib} --pattern seeded --seed {guest_seed} "
              f"--touch-mib-per-s {rate:g} --cache-mib {cache_mib} --cache-path /dev/vda &\n")
    return Workload(key=f"WS-{wss_mib}", kind="WS", user_data=script, period=period, wss_mib=wss_mib)


def cache_heavy(cache_mib: int, wss_mib: int, *, guest_seed: int, period: float = 8.0) -> Workload:
    """W3: ``cache_mib`` MiB of cold page cache (written once, fsynced, kept) plus a small W1."""
    base = spike_guest(cache_mib, wss_mib, guest_seed=guest_seed, period=period)
    return Workload(key=f"W3-{cache_mib}", kind="W3", user_data=base.user_data, period=period, wss_mib=wss_mib)


def scenario(name: str, index: int, *, seed: int, quick: bool = False) -> Workload:
    """The workload of guest ``index`` (0-based) in scenario ``ident`` or ``mixed`` (design §9.3).

    ``mixed``: half W1 with WSS cycling over 32/64/128 MiB, a quarter W2 (32/128 MiB), a quarter
    W0/W3 (idle; 96 MiB of cold page cache with a 16 MiB W1), alternating.
    """
    guest_seed = seed * 1000 + index + 1
    if name == "ident":
        return idle()
    if name != "mixed":
        raise ValueError(f"unknown scenario {name!r}")
    slot = index % 4
    if slot in (0, 2):
        return steady((32, 64, 128)[(index // 2) % 3], guest_seed=guest_seed)
    if slot == 1:
        low_s, high_s = (20.0, 10.0) if quick else (60.0, 30.0)
        return bursty(32, 128, guest_seed=guest_seed, low_s=low_s, high_s=high_s,
                      offset_s=(index * 7.0) % (low_s + high_s))
    return idle() if (index // 4) % 2 == 0 else cache_heavy(96, 16, guest_seed=guest_seed)
