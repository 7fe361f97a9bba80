"""The agent's network reconciler: keeps this host's dataplane equal to the desired state.

It applies the control plane's ``HostNetworkState`` when the agent starts, whenever the control
plane says this host's state changed (``kick``: its long-poll answers at once after a change that
concerns this host, a port or a security-group rule, say), whenever the agent asks
(``reconcile_now``: before a VM with NICs is started), and every ``period`` seconds besides, the
backstop for a change whose notice was lost (a control plane restarted in between).  Notices
make at most one pass per ``kick_gap`` (1 s): a burst of changes costs a pass a second, not a
pass per change.  Passes never overlap; a failed pass is logged and retried, sooner at first
(1 s, doubling up to ``period``), so a transient error does not leave a VM without its network
for long.
A pass that applied everything but some objects (``ApplyReport.failed``: a bad value in one
tenant's port, say) counts as done for everyone else; the failed objects are logged with their
ids and reasons and tried again on every pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from yunstack.network.dataplane.base import ApplyReport, Dataplane
from yunstack.network.desired import HostNetworkState

log = logging.getLogger(__name__)

KICK_GAP_SECONDS = 1.0  # at least this long from one pass's start to the next one a notice asks for


class NetworkReconciler:
    def __init__(self, dataplane: Dataplane, fetch_state: Callable[[], HostNetworkState],
                 period: float = 30.0, kick_gap: float = KICK_GAP_SECONDS) -> None:
        self.dataplane = dataplane
        self.fetch_state = fetch_state
        self.period = period
        self.kick_gap = kick_gap
        self.last_report: ApplyReport | None = None
        self.last_error: BaseException | None = None
        self.last_success: float | None = None  # time.monotonic() of the last good pass
        self._lock = asyncio.Lock()
        self._kicked = asyncio.Event()

    def kick(self) -> None:
        """Reconcile soon (from the agent's loop): kicks that come while a pass runs make one more pass."""
        self._kicked.set()

    async def reconcile_now(self) -> ApplyReport:
        """Fetch the desired state and apply it; raises what the fetch or the dataplane raised."""
        async with self._lock:
            try:
                state = await asyncio.to_thread(self.fetch_state)
                report = await self.dataplane.apply(state)
            except Exception as exc:
                self.last_error = exc
                raise
            self.last_report, self.last_error = report, None
            for failure in report.failed:
                log.warning("network object not applied (retried next pass): %s", failure)
            self.last_success = time.monotonic()
            return report

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop`` is set (the first pass runs at once)."""
        retry = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.reconcile_now()
                wait, retry = self.period, 1.0
            except Exception:
                log.exception("network reconcile failed; retrying in %.0fs", retry)
                wait, retry = retry, min(retry * 2, self.period)
            await self._sleep(stop, wait)
            # A burst of notices (servers booting one after another on a network this host shares)
            # makes one pass per ``kick_gap``, not one per notice: the kicks meanwhile wait for it.
            gap = self.kick_gap - (time.monotonic() - started)
            if gap > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), gap)
            self._kicked.clear()  # cleared before the pass: a kick during it makes another

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Until ``seconds`` pass, ``stop`` is set or a ``kick`` comes."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._kicked.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
