"""The host agent: a loop of its own that carries out queued work, syncs power states, heartbeats.

It runs in its own thread with its own asyncio loop, so a slow guest operation never stalls the
API.  On start it adopts the guests that outlived the previous control plane (the driver finds
them on the host) and reconciles them with what the control plane believes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path

from yunstack.agent.console import ConsoleRelay, open_relay
from yunstack.agent.imagecache import ImageCache
from yunstack.agent.link import Answer, ControlPlane, HostCall, Wakeup, work_key
from yunstack.agent.netreconcile import NetworkReconciler
from yunstack.agent.steps import STEPS
from yunstack.agent.steps.volumes import local_volume_disk, nbd_disk
from yunstack.compute.driver import (
    ComputeDriver,
    ConfigDrive,
    Disk,
    HostInfo,
    InstanceInfo,
    InstanceSpec,
    MemoryBacking,
    Nic,
    PowerState,
    named_at_boot,
    root_disk,
)
from yunstack.errors import Conflict, NotFound, YunError
from yunstack.memory.manager import MemoryManager
from yunstack.memory.model import EXTRA_MEMORY_TEMPLATE, EXTRA_PAGE_SHARING, GuestPolicy, asks_for_template
from yunstack.network.dataplane.base import Dataplane
from yunstack.protocol import Outcome, SpecData, SpecVolume, Work
from yunstack.volume.backend import VolumeBackend
from yunstack.volume.export import NbdExports

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0  # how often the agent looks at its resources (a report goes only if due)
REPORT_SECONDS = 60.0  # the longest between two resource reports (Nova's resource tracker: 60 s)
REPORT_MEMORY_DRIFT_MIB = 256  # host memory in use that moved this much is reported at once
POWER_SYNC_SECONDS = 2.0  # how often the agent looks at its guests (a sync goes when they changed)
POWER_RESYNC_SECONDS = 10.0  # the longest between two syncs: the control plane's repairs ride on them
MEMORY_REPORT_SECONDS = 10.0
LONG_POLL_SECONDS = 20.0  # one wait for work; the control plane answers sooner when there is some
FINISHED_REMEMBERED = 256  # recently finished steps an agent run recognises when handed them again
REPORT_RETRY_SECONDS = 0.5  # the first retry of a report the control plane did not take
REPORT_RETRY_MAX_SECONDS = 5.0
REPORT_GIVE_UP_SECONDS = 300.0  # a control plane that restarts is back well before this
MAKE_ROOM_SECONDS = 20.0  # how long a spawn waits for the memory manager to reclaim room for it
MIB = 1 << 20

# Flavor extra specs for ESX-style per-server memory allocation (docs/explanation/memory.md).
SPEC_RESERVATION = "yunstack:memory_reservation_mib"
SPEC_LIMIT = "yunstack:memory_limit_mib"
SPEC_SHARES = "yunstack:memory_shares"


def memory_policy(extra: Mapping[str, str], memory_mib: int) -> GuestPolicy:
    """A server's reservation, limit and shares from its flavor's extra specs, with sane defaults.

    Defaults: no reservation beyond the policy's own floor, the limit is the configured size, and
    shares are proportional to size (ESX: 10 shares per MiB), so a bigger server gets more when
    memory is contended.  Unparseable values fall back to the defaults (flavors validate them).
    """

    def number(key: str, default: int) -> int:
        try:
            return max(0, int(extra.get(key, default)))
        except (TypeError, ValueError):
            return default

    reservation = min(number(SPEC_RESERVATION, 0), memory_mib)
    limit = number(SPEC_LIMIT, memory_mib) or memory_mib
    return GuestPolicy(reservation_bytes=reservation * MIB, limit_bytes=min(limit, memory_mib) * MIB,
                       shares=number(SPEC_SHARES, 10 * memory_mib) or 1,
                       page_sharing=extra.get(EXTRA_PAGE_SHARING, "on") != "off",
                       template=asks_for_template(extra.get(EXTRA_MEMORY_TEMPLATE)))


class Agent:
    def __init__(self, host: str, driver: ComputeDriver, link: ControlPlane, *, image_cache: Path,
                 poll_interval: float = 1.0, stop_timeout: float | None = None,
                 memory: MemoryManager | None = None, dataplane: Dataplane | None = None,
                 network_period: float = 30.0, poll_timeout: float = LONG_POLL_SECONDS,
                 tunnel_ip: str = "", compute: bool = True, volumes: VolumeBackend | None = None,
                 exports: NbdExports | None = None) -> None:
        self.host = host
        self.volumes = volumes  # the volume backend when this host keeps volumes (the storage host)
        self.exports = exports  # its NBD exports to guests on other hosts
        # This run's name as a lease owner: a restarted agent is a new owner, and gets the steps
        # its predecessor held back at once (``ControlPlane.wait``).
        self.owner = f"{host}/{uuid.uuid4().hex[:12]}"
        # False: a network host only (the lab's control host): no heartbeat, so no hypervisor to
        # schedule onto, and no power sync; its dataplane still serves DHCP, routers and metadata.
        self.compute = compute
        # Where another host reaches this one (an incoming migration listens there).
        self.address = tunnel_ip or "127.0.0.1"
        self.memory = memory
        self.dataplane = dataplane
        self.network = (NetworkReconciler(dataplane, lambda: link.network_state(host, tunnel_ip), network_period)
                        if dataplane is not None else None)
        self.driver = driver
        self.link = link
        self.cache = ImageCache(image_cache, link)
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        self.poll_timeout = poll_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, Work] = {}  # instance id -> the work its task carries out
        self._deferred: dict[str, Work] = {}  # instance id -> work that came while it was busy
        # (task id, attempt) of the steps this run finished lately: a copy handed out again by a
        # long-poll that saw it running just before it ended is not run a second time.
        self._finished: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._reads: set[asyncio.Task[None]] = set()
        self._consoles: set[ConsoleRelay] = set()  # serial console relays open now
        self._ready = threading.Event()
        self._reported: HostInfo | None = None  # the last resource report the control plane took
        self._reported_at = 0.0
        self._synced: tuple[InstanceInfo, ...] | None = None  # the guests as the last power sync said
        self._synced_at = 0.0
        self._error: BaseException | None = None

    # -- lifecycle (called from other threads) ---------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the agent thread; returns once the driver is initialised and guests are adopted."""
        self._thread = threading.Thread(target=self._main, name=f"agent-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the host agent did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop; guests keep running (they outlive the control plane on purpose)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("host agent stopped with an error")

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.driver.init_host()
        await self._guard(self._restart_exports(), "volume exports")
        if self.compute:
            await self._heartbeat()
            await self._sync_power()
        network_task = None
        if self.network is not None:
            await self._guard(self._reconcile(), "network reconcile")
            network_task = asyncio.create_task(self.network.run(self._stop), name="network-reconciler")
        memory_task = None
        if self.memory is not None:
            await self._adopt_memory_policies()
            memory_task = asyncio.create_task(self.memory.run(self._stop), name="memory-manager")
        ticker = asyncio.create_task(self._tick(), name="agent-ticker")
        self._ready.set()
        log.info("host agent for %s running", self.host)
        while not self._stop.is_set():
            try:
                wakeup = await self._wait(self.poll_timeout)
            except Exception:
                log.exception("could not wait for work; retrying in %.1fs", self.poll_interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
                continue
            if wakeup is not None and not self._start(wakeup) and wakeup.work and not wakeup.calls:
                # Only copies of steps it already ran (one let go after its report kept failing
                # is handed out until its lease is over): do not ask again at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
        await asyncio.gather(ticker, return_exceptions=True)
        for task in list(self._inflight.values()) + list(self._reads):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._reads, return_exceptions=True)
        for relay in list(self._consoles):
            relay.close()
        if network_task is not None:
            await asyncio.gather(network_task, return_exceptions=True)
            await self._guard(self._release_network(), "network release")
        if memory_task is not None:
            # The manager restores KSM knobs and removes its swapfile when it sees the stop event.
            await asyncio.gather(memory_task, return_exceptions=True)

    async def _tick(self) -> None:
        """Power sync, heartbeat and memory report, each on its own period, until stopped."""
        assert self._stop is not None
        last_beat = last_sync = last_memory = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(POWER_SYNC_SECONDS, self.poll_interval))
            now = time.monotonic()
            if not self.compute:
                continue
            if now - last_sync >= POWER_SYNC_SECONDS:
                await self._guard(self._sync_power(force=False), "power sync")
                last_sync = now
            if now - last_beat >= HEARTBEAT_SECONDS:
                await self._guard(self._heartbeat(force=False), "heartbeat")
                last_beat = now
            if self.memory is not None and now - last_memory >= MEMORY_REPORT_SECONDS:
                await self._guard(self._report_memory(), "memory report")
                last_memory = now

    async def _wait(self, timeout: float) -> Wakeup | None:
        """The control plane's long-poll, given up (None) when the agent stops meanwhile.

        The blocking call runs in a daemon thread of its own: a stopping agent does not wait for a
        long-poll to time out (its answer, if any, is dropped; the work stays queued).
        """
        assert self._loop is not None and self._stop is not None
        loop, answer = self._loop, self._loop.create_future()
        busy = self._busy()

        def run() -> None:
            try:
                result: object = self.link.wait(self.host, busy, timeout, self.owner)
            except BaseException as exc:  # handed to the loop, which re-raises it
                result = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: the agent stopped
                loop.call_soon_threadsafe(_settle, answer, result)

        threading.Thread(target=run, name=f"agent-wait-{self.host}", daemon=True).start()
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({answer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not answer.done():
            answer.cancel()
            return None
        result: Wakeup = answer.result()
        return result

    def _busy(self) -> frozenset[str]:
        """The keys of the work this agent has: running, or deferred behind its instance's running op."""
        return frozenset(work_key(w) for w in (*self._running.values(), *self._deferred.values()))

    def _start(self, wakeup: Wakeup) -> bool:
        """Start (or defer) the wakeup's new work, answer its reads, and pass its network notice to
        the reconciler (whose own task fetches and applies the state); whether any work was new."""
        if wakeup.network and self.network is not None:
            self.network.kick()
        new = False
        for item in wakeup.work:
            running = self._running.get(item.instance_id)
            if running is not None and work_key(running) == work_key(item):
                continue  # handed out again while it runs (a long-poll that began before): one run is enough
            if item.task_id and (item.task_id, item.attempt) in self._finished:
                continue  # the same, seen only after it ended
            new = True
            if item.instance_id in self._inflight:
                # Claimed while its instance's op runs (a delete during a build): that op's end starts it.
                self._deferred[item.instance_id] = item
                continue
            task = asyncio.create_task(self._perform(item), name=f"{item.op}-{item.instance_id}")
            self._inflight[item.instance_id] = task
            self._running[item.instance_id] = item
            task.add_done_callback(self._forget(item.instance_id))
        for call in wakeup.calls:
            read = asyncio.create_task(self._read(call), name=f"{call.kind}-{call.instance_id}")
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)
        return new

    async def _read(self, call: HostCall) -> None:
        """Answer one of the control plane's reads from the driver (never behind an operation)."""
        try:
            if call.kind == "console_output":
                answer = Answer(call_id=call.id, result=await self.driver.console_output(call.instance_id,
                                                                                          call.length))
            elif call.kind == "serial_relay":
                path = await self.driver.serial_console(call.instance_id)
                relay = await asyncio.to_thread(open_relay, path, lambda: self.link.open_console(call.session),
                                                self._consoles.discard)
                self._consoles.add(relay)
                answer = Answer(call_id=call.id, result="connected")
            else:
                answer = Answer(call_id=call.id, error=f"unknown read {call.kind!r}")
        except YunError as exc:
            answer = Answer(call_id=call.id, error=exc.text)
        except Exception as exc:
            log.exception("%s of %s failed", call.kind, call.instance_id)
            answer = Answer(call_id=call.id, error=f"{type(exc).__name__}: {exc}")
        await self._guard(asyncio.to_thread(self.link.answer, self.host, answer), "answer")

    async def _guard(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            log.exception("agent %s failed; will retry", what)

    async def _release_network(self) -> None:
        """At shutdown, remove this installation's host networking when nothing needs it.

        Guests and routers outlive the control plane, so while this host has a VM port or a router
        everything stays.  With neither, what is left (the external bridge, DHCP servers with no
        one to serve, the base chains) is removed; the next start's first pass makes it again.
        """
        assert self.network is not None and self.dataplane is not None
        state = await asyncio.to_thread(self.network.fetch_state)
        if not state.ports and not state.routers:
            await self.dataplane.teardown()
            log.info("no VM port and no router on this host: its networking was removed")

    async def _reconcile(self) -> None:
        if self.network is not None:
            await self.network.reconcile_now()

    async def _adopt_memory_policies(self) -> None:
        """After a restart, give the manager the policies of the guests it finds running."""
        assert self.memory is not None
        for info in await self.driver.list_instances():
            try:
                data = await asyncio.to_thread(self.link.spec, info.id)
            except YunError:
                continue
            self.memory.set_policy(info.id, memory_policy(data.extra, data.memory_mib))

    async def _report_memory(self) -> None:
        assert self.memory is not None
        entry = self.memory.latest()
        if entry is not None:
            await asyncio.to_thread(self.link.report_memory, self.host, entry.as_dict())

    def memory_ledger(self, since: float | None = None) -> list[dict[str, object]]:
        """The manager's ledger history (thread-safe read of an append-only deque)."""
        if self.memory is None:
            return []
        return [e.as_dict() for e in self.memory.ledger(since)]

    async def _heartbeat(self, *, force: bool = True) -> None:
        """Report the host's resources, unless (``force`` False) the last report still holds.

        The agent's sign of life is its long-poll (``HostService.seen``), so a report that would
        say nothing new is not sent: once a minute at least, and at once when the host's size,
        capabilities or address changed or its use moved (``_report_due``).
        """
        info = replace(await self.driver.host_info(), host_ip=self.address)
        now = time.monotonic()
        if not force and not _report_due(self._reported, info, now - self._reported_at):
            return
        await asyncio.to_thread(self.link.heartbeat, self.host, info)
        self._reported, self._reported_at = info, now

    async def _sync_power(self, *, force: bool = True) -> None:
        """Tell the control plane what guests run here and how, and destroy those it no longer knows.

        Unless ``force``, the sync goes only when the guests changed since the last one (a guest
        stopped, appeared or went), or ``POWER_RESYNC_SECONDS`` after it: the control plane's own
        repairs (orphans, creates it never queued, leftover ports) ride on the sync, so it still
        comes, but an idle host is not a call every 2 s.
        """
        busy = frozenset(self._inflight)
        infos = await self.driver.list_instances()
        now = time.monotonic()
        observed = tuple(sorted(infos, key=lambda i: i.id))
        if not force and observed == self._synced and now - self._synced_at < POWER_RESYNC_SECONDS:
            return
        # A guest in a live migration is the migration's while the control plane has it in progress
        # (it says so by the migration's status, and leaves such guests' power state alone); once
        # the migration ended, or the server was deleted during it, a copy left here is an orphan.
        # Guests with an operation in flight are the operation's business, not the sync's: an op can
        # finish between our listing and the control plane's comparison.
        orphans = await asyncio.to_thread(self.link.sync_power, self.host, infos, busy | set(self._inflight))
        self._synced, self._synced_at = observed, now
        for instance_id in orphans:
            if instance_id not in self._inflight:
                log.warning("destroying guest %s: the control plane no longer knows it", instance_id)
                with contextlib.suppress(NotFound):  # its directory went away meanwhile: nothing to do
                    await self.driver.destroy(instance_id)

    async def _follow_up(self, done: str) -> None:
        """Right after an operation: work claimed meanwhile (a delete), or queued by its end (the offload
        after a shelve, a migration's next step)."""
        finished = self._running.pop(done, None)
        self._inflight.pop(done, None)
        deferred = self._deferred.pop(done, None)
        if deferred is not None and (finished is None or work_key(deferred) != work_key(finished)):
            self._start(Wakeup(work=(deferred,)))  # claimed for this agent: it runs now
        try:
            wakeup = await asyncio.to_thread(self.link.wait, self.host, self._busy(), 0.0, self.owner)
        except Exception:
            log.exception("could not read pending work")
            return
        self._start(Wakeup(work=wakeup.work, network=wakeup.network))  # reads: the main loop's wait answers them
        for call in wakeup.calls:
            read = asyncio.create_task(self._read(call), name=f"{call.kind}-{call.instance_id}")
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)

    def _forget(self, instance_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if self._inflight.get(instance_id) is task:
                # Ended without its follow-up (the agent is stopping): what it and anything deferred
                # behind it held is no longer renewed, so the next run of this agent gets it back.
                self._inflight.pop(instance_id, None)
                self._running.pop(instance_id, None)
                self._deferred.pop(instance_id, None)

        return done

    # -- operations ------------------------------------------------------------------------------

    async def spec(self, instance_id: str, image_id: str | None = None) -> InstanceSpec:
        """The instance's spec, its disk based on ``image_id`` if given (unshelve), else its image."""
        data: SpecData = await asyncio.to_thread(self.link.spec, instance_id)
        own: tuple[Disk, ...] = ()
        if image_id or data.image_id:  # else booted from a volume: its root is the volume of boot index 0
            path, fmt = await asyncio.to_thread(self.cache.ensure, image_id or data.image_id)
            own = root_disk(path, fmt, data.disk_gib)
        volumes = tuple([await self._volume_disk(v) for v in data.volumes])
        template = asks_for_template(data.extra.get(EXTRA_MEMORY_TEMPLATE))
        memory = MemoryBacking(page_sharing=data.extra.get(EXTRA_PAGE_SHARING, "on") != "off", template=template)
        if self.memory is not None:
            self.memory.set_policy(data.id, memory_policy(data.extra, data.memory_mib))
            # The manager decides page sharing, THP and templates per VM; the driver applies them at start.
            memory = self.memory.memory_backing(data.id)
        nics: tuple[Nic, ...] = ()
        if data.port_ids and self.network is not None and self.dataplane is not None:
            # Taps must exist and sit on their bridges, with their rules, before QEMU opens them.
            await self.network.reconcile_now()
            nics = tuple(self.dataplane.nic_for_port(p) for p in data.port_ids)
        drive = data.config_drive
        config_drive = None if drive is None else ConfigDrive(
            meta_data=drive.meta_data, user_data=drive.user_data, network_data=drive.network_data,
            vendor_data=drive.vendor_data)
        spec = InstanceSpec(id=data.id, name=data.name, hostname=data.hostname, vcpus=data.vcpus,
                            memory_mib=data.memory_mib, disks=(*own, *volumes),
                            config_drive=config_drive, memory=memory, nics=nics)
        return replace(spec, disks=(*own, *named_at_boot(spec, volumes))) if volumes else spec

    async def _restart_exports(self) -> None:
        """Exports whose daemon is gone (this host rebooted) serve again, on their port with their key, so the
        guests on other hosts reconnect; an export the control plane ended meanwhile goes with its step."""
        if self.exports is None or self.volumes is None:
            return
        for volume_id, export in (await self.exports.stopped()).items():
            try:
                local = await self.volumes.local_disk(volume_id)
                await self.exports.start(volume_id, local, export.host, port=export.port,
                                         identity=export.psk_identity)
                log.info("volume %s: its export serves again on %s:%d", volume_id, export.host, export.port)
            except YunError as exc:
                log.warning("volume %s: its export could not start again: %s", volume_id, exc.text)

    async def _volume_disk(self, volume: SpecVolume) -> Disk:
        """A volume the guest has from its boot on: the storage host's export when it is kept on another
        host, else opened where this host's backend keeps it."""
        if volume.nbd is not None:
            return nbd_disk(volume.volume_id, volume.nbd, read_only=volume.read_only, boot_index=volume.boot_index)
        if self.volumes is None:
            raise Conflict("Volume {id} is kept by a storage host, and this host keeps no volumes: attaching "
                           "across hosts is not supported yet.", id=volume.volume_id)
        local = await self.volumes.local_disk(volume.volume_id)
        return local_volume_disk(volume.volume_id, local, read_only=volume.read_only, boot_index=volume.boot_index)

    @contextlib.asynccontextmanager
    async def room(self, spec: InstanceSpec) -> AsyncIterator[None]:
        """Let the memory manager make room (reclaim idle guests' cache) before a guest starts."""
        if self.memory is None:
            yield
            return
        async with self.memory.room_for(spec.memory_mib * MIB, MAKE_ROOM_SECONDS):
            yield

    async def nic(self, port_id: str) -> Nic:
        """The NIC of a port that was just bound to this host: reconcile first, so its tap exists."""
        if self.network is None or self.dataplane is None:
            raise Conflict("This host has no dataplane to plug interfaces into.")
        await self.network.reconcile_now()
        return self.dataplane.nic_for_port(port_id)

    def forget(self, instance_id: str) -> None:
        if self.memory is not None:
            self.memory.forget(instance_id)

    async def _perform(self, work: Work) -> None:
        """Run one step (``agent.steps``) and report what the host saw; the control plane decides the rest."""
        started = time.monotonic()
        step = STEPS.get(work.op)
        try:
            if step is None:
                raise NotFound("Unknown agent operation {op}.", op=work.op)
            report = await step.run(self, work)
            outcome = Outcome(instance_id=work.instance_id, op=work.op, request_id=work.request_id,
                              power_state=int(report.power), result=report.result, task_id=work.task_id,
                              attempt=work.attempt, resource_type=work.resource_type)
        except YunError as exc:
            outcome = await self._failed(work, exc.text)
        except Exception as exc:
            log.exception("%s of %s failed", work.op, work.instance_id)
            outcome = await self._failed(work, f"{type(exc).__name__}: {exc}")
        log.info("%s of %s: %s in %.2fs", work.op, work.instance_id, outcome.error or "done",
                 time.monotonic() - started)
        if not await self._report(outcome):
            return
        if work.task_id:
            self._finished[(work.task_id, work.attempt)] = None
            while len(self._finished) > FINISHED_REMEMBERED:
                self._finished.popitem(last=False)
        await self._follow_up(work.instance_id)
        if step is not None and step.reconcile_network and self.network is not None:
            # Its ports changed: take taps and rules away without waiting for the period.
            await self._guard(self._reconcile(), "network reconcile")

    async def _report(self, outcome: Outcome) -> bool:
        """Send ``outcome`` until the control plane has it; False if the agent stopped first.

        While the control plane cannot be reached the step stays this agent's (it is in flight, so
        every wait renews its lease) and the report is sent again, backing off to REPORT_RETRY_MAX_SECONDS.
        A refusal (4xx: the step is no longer this run's) ends the retries: whoever holds it reports.
        If this agent dies meanwhile, its successor gets the step back and runs it again (every step
        is safe to repeat).  After REPORT_GIVE_UP_SECONDS of failures (a report the control plane
        fails on every time) the agent lets the step go: its lease runs out and it runs again, at
        most as often as its task allows, then fails with the reason.
        """
        assert self._stop is not None
        delay = REPORT_RETRY_SECONDS
        give_up = time.monotonic() + REPORT_GIVE_UP_SECONDS
        while True:
            try:
                await asyncio.to_thread(self.link.finish, outcome)
                return True
            except YunError as exc:
                if exc.status < 500:
                    log.warning("the report of %s of %s was refused: %s", outcome.op, outcome.instance_id, exc.text)
                    return True
                why: str = exc.text
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= give_up:
                log.error("gave up reporting %s of %s (%s): it will run again once its lease is over",
                          outcome.op, outcome.instance_id, why)
                return True
            log.warning("could not report %s of %s (%s); trying again in %.1fs", outcome.op, outcome.instance_id,
                        why, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return False
            delay = min(delay * 2, REPORT_RETRY_MAX_SECONDS)

    async def _failed(self, work: Work, message: str) -> Outcome:
        """A failed step reports the guest's power state as it is now (NOSTATE when there is none)."""
        power = int(PowerState.NOSTATE)
        if work.resource_type == "server":  # a volume step has no guest to look at
            with contextlib.suppress(YunError):
                power = int((await self.driver.get_info(work.instance_id)).power_state)
        return Outcome(instance_id=work.instance_id, op=work.op, request_id=work.request_id,
                       power_state=power, error=message, task_id=work.task_id, attempt=work.attempt,
                       resource_type=work.resource_type)


def _settle(future: asyncio.Future[Wakeup], result: object) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _report_due(last: HostInfo | None, info: HostInfo, age: float) -> bool:
    """Whether a resource report is worth sending: the first, one a minute old, or one that differs
    in what the scheduler and operators read (the uptime line always differs: it is not a reason)."""
    if last is None or age >= REPORT_SECONDS:
        return True
    if abs(info.memory_used_mib - last.memory_used_mib) >= REPORT_MEMORY_DRIFT_MIB:
        return True
    return replace(info, uptime="", memory_used_mib=0) != replace(last, uptime="", memory_used_mib=0)
