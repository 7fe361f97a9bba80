"""The host agent: a loop of its own that carries out queued work, syncs power states, heartbeats.

It runs in its own thread with its own asyncio loop, so a slow guest operation never stalls the
API.  On start it adopts the guests that outlived the previous control plane (the driver finds
them on the host) and reconciles them with what the control plane believes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path

from yunstack.agent import lifecycle
from yunstack.agent.imagecache import ImageCache
from yunstack.agent.link import ControlPlane, Outcome, SpecData, Work
from yunstack.agent.netreconcile import NetworkReconciler
from yunstack.compute import states
from yunstack.compute.driver import ComputeDriver, InstanceSpec, Nic, PowerState
from yunstack.errors import Conflict, NotFound, YunError
from yunstack.memory.manager import MemoryManager
from yunstack.memory.model import EXTRA_PAGE_SHARING, GuestPolicy
from yunstack.network.dataplane.base import Dataplane

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
POWER_SYNC_SECONDS = 2.0
MEMORY_REPORT_SECONDS = 10.0
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
                       page_sharing=extra.get(EXTRA_PAGE_SHARING, "on") != "off")


class Agent:
    def __init__(self, host: str, driver: ComputeDriver, link: ControlPlane, *, image_cache: Path,
                 poll_interval: float = 1.0, stop_timeout: float | None = None,
                 memory: MemoryManager | None = None, dataplane: Dataplane | None = None,
                 network_period: float = 5.0, tunnel_ip: str = "") -> None:
        self.host = host
        self.memory = memory
        self.dataplane = dataplane
        self.network = (NetworkReconciler(dataplane, lambda: link.network_state(host, tunnel_ip), network_period)
                        if dataplane is not None else None)
        self.driver = driver
        self.link = link
        self.cache = ImageCache(image_cache, link)
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._ready = threading.Event()
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

    def wake(self) -> None:
        """Look for work now (thread-safe); the API calls this after queueing work for this host."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def call(self, make: Callable[[], Awaitable[object]], timeout: float = 30.0) -> object:
        """Run a coroutine on the agent's loop from another thread and wait for its result."""
        if self._loop is None:
            raise Conflict("The host agent is not running.")
        future = asyncio.run_coroutine_threadsafe(_await(make), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise Conflict("The host agent did not answer within {t} s.", t=timeout) from exc

    def console_output(self, instance_id: str, length: int | None) -> str:
        return str(self.call(lambda: self.driver.console_output(instance_id, length)))

    def serial_console(self, instance_id: str) -> str:
        """The unix socket of the guest's serial port (the API bridges a websocket to it)."""
        return str(self.call(lambda: self.driver.serial_console(instance_id)))

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
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        await self.driver.init_host()
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
        self._ready.set()
        log.info("host agent for %s running", self.host)
        last_beat = last_sync = last_memory = time.monotonic()
        while not self._stop.is_set():
            await self._dispatch()
            now = time.monotonic()
            if now - last_sync >= POWER_SYNC_SECONDS:
                await self._guard(self._sync_power(), "power sync")
                last_sync = now
            if now - last_beat >= HEARTBEAT_SECONDS:
                await self._guard(self._heartbeat(), "heartbeat")
                last_beat = now
            if self.memory is not None and now - last_memory >= MEMORY_REPORT_SECONDS:
                await self._guard(self._report_memory(), "memory report")
                last_memory = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if network_task is not None:
            await asyncio.gather(network_task, return_exceptions=True)
            await self._guard(self._release_network(), "network release")
        if memory_task is not None:
            # The manager restores KSM knobs and removes its swapfile when it sees the stop event.
            await asyncio.gather(memory_task, return_exceptions=True)

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

    async def _heartbeat(self) -> None:
        info = await self.driver.host_info()
        await asyncio.to_thread(self.link.heartbeat, self.host, info)

    async def _sync_power(self) -> None:
        busy = frozenset(self._inflight)
        infos = await self.driver.list_instances()
        # Guests with an operation in flight are the operation's business, not the sync's: an op can
        # finish between our listing and the control plane's comparison.
        orphans = await asyncio.to_thread(self.link.sync_power, self.host, infos, busy | set(self._inflight))
        for instance_id in orphans:
            if instance_id not in self._inflight:
                log.warning("destroying guest %s: the control plane no longer knows it", instance_id)
                with contextlib.suppress(NotFound):  # its directory went away meanwhile: nothing to do
                    await self.driver.destroy(instance_id)

    async def _dispatch(self) -> None:
        try:
            work = await asyncio.to_thread(self.link.pending_work, self.host)
        except Exception:
            log.exception("could not read pending work")
            return
        for item in work:
            if item.instance_id in self._inflight:
                continue
            task = asyncio.create_task(self._perform(item), name=f"{item.op}-{item.instance_id}")
            self._inflight[item.instance_id] = task
            task.add_done_callback(self._forget(item.instance_id))

    def _forget(self, instance_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(instance_id, None)

        return done

    # -- operations ------------------------------------------------------------------------------

    async def _spec(self, instance_id: str, image_id: str | None = None) -> InstanceSpec:
        """The instance's spec, its disk based on ``image_id`` if given (unshelve), else its image."""
        data: SpecData = await asyncio.to_thread(self.link.spec, instance_id)
        path, fmt = await asyncio.to_thread(self.cache.ensure, image_id or data.image_id)
        extra = dict(data.extra)
        if self.memory is not None:
            self.memory.set_policy(data.id, memory_policy(extra, data.memory_mib))
            # The manager decides page sharing and THP per VM; the driver applies them at start.
            extra.update(self.memory.instance_extra(data.id))
        nics: tuple[Nic, ...] = ()
        if data.port_ids and self.network is not None and self.dataplane is not None:
            # Taps must exist and sit on their bridges, with their rules, before QEMU opens them.
            await self.network.reconcile_now()
            nics = tuple(self.dataplane.nic_for_port(p) for p in data.port_ids)
        return InstanceSpec(id=data.id, name=data.name, hostname=data.hostname, vcpus=data.vcpus,
                            memory_mib=data.memory_mib, disk_gib=data.disk_gib, base_image=path,
                            base_format=fmt, config_drive=data.config_drive, extra=extra, nics=nics)

    @contextlib.asynccontextmanager
    async def _room(self, spec: InstanceSpec) -> AsyncIterator[None]:
        """Let the memory manager make room (reclaim idle guests' cache) before a guest starts."""
        if self.memory is None:
            yield
            return
        async with self.memory.room_for(spec.memory_mib * MIB, MAKE_ROOM_SECONDS):
            yield

    async def _nic(self, port_id: str) -> Nic:
        """The NIC of a port that was just bound to this host: reconcile first, so its tap exists."""
        if self.network is None or self.dataplane is None:
            raise Conflict("This host has no dataplane to plug interfaces into.")
        await self.network.reconcile_now()
        return self.dataplane.nic_for_port(port_id)

    async def _perform(self, work: Work) -> None:
        started = time.monotonic()
        try:
            outcome = await self._run_op(work)
        except YunError as exc:
            outcome = await self._failed(work, exc.text)
        except Exception as exc:
            log.exception("%s of %s failed", work.op, work.instance_id)
            outcome = await self._failed(work, f"{type(exc).__name__}: {exc}")
        log.info("%s of %s: %s in %.2fs", work.op, work.instance_id, outcome.error or "done",
                 time.monotonic() - started)
        await asyncio.to_thread(self.link.finish, outcome)
        if (work.op in ("delete", "detach_interface", "attach_interface")
                or work.op in lifecycle.NETWORK_CHANGING) and self.network is not None:
            # Its ports changed: take taps and rules away without waiting for the period.
            await self._guard(self._reconcile(), "network reconcile")

    async def _failed(self, work: Work, message: str) -> Outcome:
        try:
            info = await self.driver.get_info(work.instance_id)
            power = int(info.power_state)
        except YunError:
            power = int(PowerState.NOSTATE)
        vm_state = states.ERROR
        if work.op in ("stop", "start", "reboot", "pause", "unpause", "suspend", "resume", "snapshot",
                       "confirm_resize", "attach_interface", "detach_interface"):
            vm_state = _vm_state_for(power)  # a failed action leaves the server as it is, with a fault
        elif work.op in lifecycle.KEEPS_STATE:
            vm_state = _vm_state_for(power)
        return Outcome(instance_id=work.instance_id, op=work.op, request_id=work.request_id,
                       vm_state=vm_state, power_state=power, error=message)

    async def _run_op(self, work: Work) -> Outcome:
        d, iid, op = self.driver, work.instance_id, work.op

        def done(vm_state: str, power: PowerState, **extra: object) -> Outcome:
            return Outcome(instance_id=iid, op=op, request_id=work.request_id, vm_state=vm_state,
                           power_state=int(power), extra=extra)

        if op in lifecycle.OPS:  # rebuild, rescue, unrescue, shelve, shelve_offload, unshelve
            return await lifecycle.OPS[op](self, work, done)
        if op == "spawn":
            spec = await self._spec(iid)
            try:
                async with self._room(spec):
                    await d.spawn(spec)
            except Conflict:
                # Already exists: an earlier agent started it before a restart; adopt, don't duplicate.
                info = await d.get_info(iid)
                if info.power_state != PowerState.RUNNING:
                    await d.power_on(spec)
            return done(states.ACTIVE, PowerState.RUNNING, launched=True)
        if op == "delete":
            await d.destroy(iid)
            if self.memory is not None:
                self.memory.forget(iid)
            return done(states.DELETED, PowerState.NOSTATE)
        if op == "stop":
            await d.power_off(iid, self.stop_timeout)
            return done(states.STOPPED, PowerState.SHUTDOWN)
        if op == "start":
            await d.power_on(await self._spec(iid))
            return done(states.ACTIVE, PowerState.RUNNING)
        if op == "reboot":
            await d.reboot(iid, hard=work.args.get("type", "SOFT") == "HARD" or _hard(work))
            return done(states.ACTIVE, PowerState.RUNNING)
        if op == "pause":
            await d.pause(iid)
            return done(states.PAUSED, PowerState.PAUSED)
        if op == "unpause":
            await d.unpause(iid)
            return done(states.ACTIVE, PowerState.RUNNING)
        if op == "suspend":
            await d.suspend(iid)
            return done(states.SUSPENDED, PowerState.SUSPENDED)
        if op == "resume":
            await d.resume(iid)
            return done(states.ACTIVE, PowerState.RUNNING)
        if op in ("attach_interface", "detach_interface"):
            if op == "attach_interface":
                await d.attach_interface(iid, await self._nic(str(work.args["port_id"])))
            else:
                await d.detach_interface(iid, str(work.args["mac"]))
            info = await d.get_info(iid)
            return done(_vm_state_for(int(info.power_state)), info.power_state)
        if op == "snapshot":
            return await self._snapshot(work, done)
        if op == "resize":
            return await self._resize(work, done)
        if op == "confirm_resize":
            await d.confirm_resize(iid)
            info = await d.get_info(iid)
            return done(_vm_state_for(int(info.power_state)), info.power_state)
        if op == "revert_resize":
            spec = await self._spec(iid)
            old = dict(work.args.get("old_flavor") or {})
            if old:
                spec = replace(spec, vcpus=old["vcpus"], memory_mib=old["ram"], disk_gib=old.get("disk", 0))
            await d.power_off(iid, self.stop_timeout)  # both drivers revert only a stopped guest
            await d.revert_resize(spec)
            await d.power_on(spec)
            return done(states.ACTIVE, PowerState.RUNNING)
        raise NotFound("Unknown agent operation {op}.", op=op)

    async def _snapshot(self, work: Work, done: Callable[..., Outcome]) -> Outcome:
        image_id = str(work.args["image_id"])
        tmp = self.cache.root / f".snapshot-{image_id}.qcow2"
        self.cache.root.mkdir(parents=True, exist_ok=True)
        try:
            await self.driver.snapshot(work.instance_id, tmp)
            await asyncio.to_thread(self.link.upload_snapshot, work.instance_id, image_id, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        info = await self.driver.get_info(work.instance_id)
        return done(_vm_state_for(int(info.power_state)), info.power_state)

    async def _resize(self, work: Work, done: Callable[..., Outcome]) -> Outcome:
        d, iid = self.driver, work.instance_id
        old_spec = await self._spec(iid)
        new = dict(work.args["flavor"])
        new_spec = replace(old_spec, vcpus=new["vcpus"], memory_mib=new["ram"], disk_gib=new.get("disk", 0))
        info = await d.get_info(iid)
        was_running = info.power_state in (PowerState.RUNNING, PowerState.PAUSED)
        await d.power_off(iid, self.stop_timeout)
        await d.resize(old_spec, new_spec)
        if was_running:
            await d.power_on(new_spec)
        power = PowerState.RUNNING if was_running else PowerState.SHUTDOWN
        return done(states.RESIZED, power, flavor=new, was_running=was_running)


def _hard(work: Work) -> bool:
    return str(work.args.get("type", "SOFT")).upper() == "HARD"


def _vm_state_for(power: int) -> str:
    return {int(PowerState.RUNNING): states.ACTIVE, int(PowerState.PAUSED): states.PAUSED,
            int(PowerState.SUSPENDED): states.SUSPENDED}.get(power, states.STOPPED)


async def _await(make: Callable[[], Awaitable[object]]) -> object:
    return await make()
