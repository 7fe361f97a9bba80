"""A host's memory templates: which guests may start from one, where they live, and how one is made.

A template is a *template guest* of one image and flavor shape that booted with no config drive
and no user data, its NICs on backends that lead nowhere (``TEMPLATE_MACS``), printed
``YUNSTACK-READY`` with its identity port open, and was saved: its RAM in ``ram`` (it ran with
the file mapped shared), its device state in ``state``, its root overlay, frozen at the save, in
``disk.qcow2``, and what it was made from in ``template.json``, written last (a directory without
it is a build that did not finish).  It is never a tenant's server: its RAM holds no hostname, key
or lease of anybody's.  Templates live in ``<instances>/.templates/<key>/``, on the instances file
system, where the RAM file's clean pages are page cache the kernel may drop and read again.

The key is a hash of everything a guest started from the template must share with it (the
argv's shape: machine type, CPU model, vCPUs, memory, devices and root ports; the image file; the
QEMU version), so a change to any of them names another template, and a clone never loads a state
its QEMU cannot take (docs/explanation/memory-templates.md, section 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from yunstack.compute.driver import DiskKind, InstanceSpec, MemoryBacking, Nic
from yunstack.compute.qemu import disk, process, savestate, template
from yunstack.compute.qemu.cmdline import (
    IDENTITY_CHARDEV,
    TEMPLATE_PORTS,
    InstancePaths,
    PortLayout,
    build_argv,
    is_q35,
    laid_out_for_templates,
)
from yunstack.compute.qemu.qmp import QmpSession, open_session, wait_for_qmp
from yunstack.config import QemuConfig
from yunstack.errors import DriverError

log = logging.getLogger(__name__)

# The tiny image prints it once its resume hook listens (it waits for the listener first): a
# template saved before that would give clones that never notice their config drive.
MARKER = "YUNSTACK-READY"
# A template guest is saved once its console has been quiet this long after READY (wait_quiet).
QUIET_S = 1.0
QUIET_TIMEOUT_S = 10.0
BUILD_TIMEOUT_S = 300.0  # a template guest that has not booted by then is given up
RETRY_AFTER_S = 600.0  # a build that failed is not tried again for this long
# The template guest's QEMU name and -uuid, which must be a UUID ("memory-templ" in hex); it is no instance.
TEMPLATE_ID = "6d656d6f-7279-2d74-656d-706c00000000"
META = "template.json"
# The template guest's NICs' MACs, locally administered ("yun"); a clone's guest replaces them with
# its own (identity.message's ``macs``) before its first frame goes out.
TEMPLATE_MACS = tuple(f"0e:79:75:6e:00:{index:02x}" for index in range(TEMPLATE_PORTS - 1))
# A template past its age is moved aside to ``<key>.retired-<when>`` by its successor's build: its
# clones keep mapping its RAM file (their command lines still name ``<key>/ram``, their mappings
# the renamed file), and it is removed once none does.
RETIRED = ".retired-"


@dataclass(frozen=True)
class Template:
    """One finished template on this host."""

    key: str
    dir: Path

    @property
    def ram(self) -> Path:
        return self.dir / "ram"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"


def ineligible(spec: InstanceSpec, machine: str) -> str | None:
    """Why ``spec`` cannot start from a template, or None when it can (if the host has one)."""
    if not spec.memory.template:
        return "not asked for (image property or flavor extra spec yunstack:memory_template)"
    if not spec.memory.page_sharing:
        return "page sharing is off for this server, and a template's pages are shared by its clones"
    if not is_q35(machine):
        return f"machine {machine} has no PCIe root ports to plug a clone's config drive into"
    if spec.config_drive is None:
        return "the server has no config drive, whose files a clone takes as its identity"
    if len(spec.disks) != 1 or spec.disks[0].kind != DiskKind.LOCAL_OVERLAY:
        return "only a server with one local root disk (no volumes) starts from a template"
    if not spec.balloon or not laid_out_for_templates(spec):
        return "the template's devices include a balloon"
    if len(spec.nics) > len(TEMPLATE_MACS):
        return f"a clone has at most {len(TEMPLATE_MACS)} NICs, the template's"
    return None


def layout(spec: InstanceSpec) -> PortLayout:
    """The root ports of ``spec``'s template guest and of every guest started from it (the ports are in
    the state, and the NICs behind them; the config drive is plugged into a clone once it is ready)."""
    return PortLayout.fresh(spec)


def shape(spec: InstanceSpec) -> InstanceSpec:
    """``spec`` as its template guest: the same machine, without its identity: as many NICs, with
    ``TEMPLATE_MACS`` (the build puts them on dead ends), and no config drive."""
    nics = tuple(Nic(tap="", mac=mac) for mac, _ in zip(TEMPLATE_MACS, spec.nics, strict=False))
    return replace(spec, id=TEMPLATE_ID, name="memory-template", hostname="template", nics=nics, config_drive=None,
                   memory=MemoryBacking(page_sharing=True, thp=spec.memory.thp, template=True))


def macs(spec: InstanceSpec) -> list[tuple[str, str]]:
    """(the template's MAC, the clone's own) for each of ``spec``'s NICs, in the order of the devices."""
    return list(zip(TEMPLATE_MACS, (nic.mac for nic in spec.nics), strict=False))


def key_of(spec: InstanceSpec, qemu: QemuConfig, accel: str, qemu_version: str, disk_cache: str) -> str:
    """The template ``spec`` would start from: a hash of all that must match (``template.key``)."""
    argv = build_argv(shape(spec), InstancePaths(Path("/template")), qemu, accel, disk_cache=disk_cache,
                      layout=layout(shape(spec)), template_ram=Path("/template/ram"), dead_end_nics=True)
    image = spec.root.source
    st = image.stat()
    return template.key({"argv": "\0".join(argv), "image": str(image.resolve()), "image_size": st.st_size,
                         "image_mtime_ns": st.st_mtime_ns, "image_format": spec.root.format,
                         "disk_gib": spec.root.size_gib, "qemu": qemu_version})


def template_of(pid: int, root: Path) -> str | None:
    """The key of the template whose RAM file the QEMU ``pid`` maps, or None (an ordinary guest)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return template_in(args, root)


def template_in(args: list[bytes], root: Path) -> str | None:
    """The key of the template under ``root`` whose RAM file the QEMU argv ``args`` maps, or None."""
    prefix = f"mem-path={root.resolve()}/".replace(",", ",,").encode()
    for arg in args:
        start = arg.find(prefix)
        if start >= 0:
            rest = arg[start + len(prefix):].split(b",", 1)[0]
            key, _, name = rest.decode(errors="replace").partition("/")
            if name == "ram":
                return key
    return None


def _mapped_files(keys: set[str], root: Path) -> set[str]:
    """The files the QEMU processes of clones of ``keys`` map (``/proc/PID/maps``), as paths."""
    mapped: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or template_of(int(entry.name), root) not in keys:
            continue
        with contextlib.suppress(OSError):
            for line in (entry / "maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6:
                    mapped.add(fields[5])
    return mapped


class TemplateStore:
    """The templates under ``root`` (``<instances>/.templates``), and the builds running now."""

    def __init__(self, root: Path, socket_dir: Path, qemu: QemuConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self._socket_dir = socket_dir
        self._qemu = qemu
        self._clock = clock
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # key -> when its last build failed (monotonic)

    def ready(self, key: str) -> Template | None:
        """The finished template ``key``, or None (none made, or past ``template_max_age_hours``:
        the caller boots, and its ``build_soon`` makes the successor)."""
        found = Template(key, self.root / key)
        try:
            made_at = float(json.loads((found.dir / META).read_text())["made_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        limit = self._qemu.template_max_age_hours * 3600
        if limit > 0 and self._clock() - made_at > limit:
            return None
        return found

    def retired(self) -> Iterator[tuple[str, Path]]:
        """(key, directory) of every retired template still on disk."""
        if self.root.is_dir():
            for entry in self.root.iterdir():
                key, sep, _ = entry.name.partition(RETIRED)
                if sep and entry.is_dir():
                    yield key, entry

    def ram_files(self) -> list[tuple[str, Path]]:
        """(key, RAM file) of every finished template and every retired one still on disk: a retired
        one's clones still name its key, so its page cache counts under that key."""
        if not self.root.is_dir():
            return []
        made = [(meta.parent.name, meta.parent / "ram") for meta in self.root.glob(f"*/{META}")
                if RETIRED not in meta.parent.name]
        return made + [(key, entry / "ram") for key, entry in self.retired()]

    def prune_retired(self) -> None:
        """Remove the retired templates whose RAM file no running QEMU maps any more."""
        gone = list(self.retired())
        if not gone:
            return
        mapped = _mapped_files({key for key, _ in gone}, self.root)
        for _key, entry in gone:
            if str((entry / "ram").resolve()) not in mapped:
                shutil.rmtree(entry, ignore_errors=True)

    def _install(self, part: Path, key: str) -> None:
        """Make the finished build ``part`` the template ``key``, retiring the one it succeeds."""
        current = self.root / key
        if current.exists():
            current.rename(self.root / f"{key}{RETIRED}{self._clock():.0f}")
        part.rename(current)
        self.prune_retired()

    def in_use(self) -> dict[str, int]:
        """Template key -> how many running QEMU processes map its RAM file."""
        counts: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (key := template_of(int(entry.name), self.root)) is not None:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def forget(self, key: str, why: str) -> None:
        """A template that failed to start a guest: removed when no guest maps it, and built again later."""
        log.warning("memory template %s is dropped: %s", key, why)
        self._failed[key] = time.monotonic()
        if key not in self.in_use():
            shutil.rmtree(self.root / key, ignore_errors=True)

    def build_soon(self, spec: InstanceSpec, key: str, accel: str, disk_cache: str) -> None:
        """Make the template ``key`` of ``spec`` in the background, unless it is being made or failed lately."""
        failed = self._failed.get(key)
        if key in self._builds or self.ready(key) is not None or (
                failed is not None and time.monotonic() - failed < RETRY_AFTER_S):
            return
        task = asyncio.get_running_loop().create_task(self._build(shape(spec), key, accel, disk_cache))
        self._builds[key] = task
        task.add_done_callback(lambda _: self._builds.pop(key, None))

    async def wait_builds(self) -> None:
        """Until the builds running now have ended (tests, benchmarks and shutdown)."""
        while self._builds:
            await asyncio.wait(list(self._builds.values()))

    async def close(self) -> None:
        """Stop the builds running now; each removes what it made."""
        for task in list(self._builds.values()):
            task.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)

    def prune(self) -> None:
        """Remove unfinished builds (an agent that died mid-build), templates no guest maps whose
        image is gone from the image cache, and retired templates no guest maps."""
        if not self.root.is_dir():
            return
        self.prune_retired()
        used = self.in_use()
        for entry in self.root.iterdir():
            if entry.name in self._builds or entry.name.removesuffix(".part") in self._builds:
                continue
            if entry.name.endswith(".part"):
                self._kill_build(entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if RETIRED in entry.name:
                continue  # prune_retired's
            try:
                image = Path(json.loads((entry / META).read_text())["image"])
            except (OSError, ValueError, KeyError):
                image = None
            if entry.name not in used and (image is None or not image.exists()):
                shutil.rmtree(entry, ignore_errors=True)

    def _kill_build(self, directory: Path) -> None:
        pid = process.read_pid(InstancePaths(directory, self._socket_dir))
        if pid is not None and process.is_guest_process(pid, TEMPLATE_ID):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    async def _build(self, spec: InstanceSpec, key: str, accel: str, disk_cache: str) -> None:
        part = self.root / f"{key}.part"
        paths = InstancePaths(part, self._socket_dir)
        found = Template(key, part)
        started = time.monotonic()
        pid: int | None = None
        try:
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True, mode=0o700)
            root = spec.root
            await disk.create_overlay(self._qemu.qemu_img, root.source, root.format, found.disk,
                                      root.size_gib * disk.GIB)
            argv = build_argv(spec, paths, self._qemu, accel, disk_cache=disk_cache, layout=layout(spec),
                              template_ram=found.ram, template_shared=True, dead_end_nics=True)
            pid = await process.launch(argv, paths, TEMPLATE_ID)
            loop = asyncio.get_running_loop()
            await wait_for_qmp(paths.qmp, f"memory template {key}", loop.time() + 15.0)
            await wait_marker(paths, pid, TEMPLATE_ID, BUILD_TIMEOUT_S, "the template guest")
            await wait_quiet(paths, QUIET_S, QUIET_TIMEOUT_S)
            async with open_session(paths.qmp, f"memory template {key}") as qmp:
                await _require_identity_port(qmp)
                await template.save(qmp, found.state, key, savestate.timeout_for(spec.memory_mib))
                await qmp.execute("quit")
            if not await process.wait_gone(pid, TEMPLATE_ID, 15.0):
                await process.kill(pid, TEMPLATE_ID)
            pid = None
            (part / META).write_text(json.dumps({
                "key": key, "image": str(root.source.resolve()), "memory_mib": spec.memory_mib,
                "vcpus": spec.vcpus, "made_at": self._clock(), "build_seconds": round(time.monotonic() - started, 3),
            }, indent=1))
            for leftover in ("qemu.pid", "console.log", "qemu-debug.log"):
                (part / leftover).unlink(missing_ok=True)
            self._install(part, key)
            log.info("memory template %s made in %.1f s", key, time.monotonic() - started)
        except BaseException as exc:
            if pid is not None:
                with contextlib.suppress(DriverError):
                    await process.kill(pid, TEMPLATE_ID)
            shutil.rmtree(part, ignore_errors=True)
            if isinstance(exc, Exception):
                self._failed[key] = time.monotonic()
                log.warning("memory template %s not made: %s", key, getattr(exc, "text", exc))
                return
            raise
        finally:
            paths.qmp.unlink(missing_ok=True)
            paths.status_qmp.unlink(missing_ok=True)
            paths.serial.unlink(missing_ok=True)
            paths.identity.unlink(missing_ok=True)


async def _require_identity_port(qmp: QmpSession) -> None:
    """The template guest has its identity port open (QEMU's chardev sees a frontend): its clones
    would otherwise never take the identity their host writes there (an image without the tiny
    image's listener, or one from before it read the port)."""
    chardevs = await qmp.execute("query-chardev")
    found = next((c for c in chardevs if isinstance(c, dict) and c.get("label") == IDENTITY_CHARDEV), None)
    if found is None or not found.get("frontend-open"):
        raise DriverError(detail="the template guest does not listen on its identity port "
                                 "(an image without the tiny image's yunstack-hotplug, or an older one)")


async def wait_quiet(paths: InstancePaths, quiet: float, timeout: float) -> None:
    """Until the guest's console has printed nothing for ``quiet`` seconds (``timeout`` at most).

    After READY a template guest's console shell still starts (it polls for the end of the boot)
    and draws its prompt; saved before that, every clone would draw it in the middle of its
    resume's markers.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    size, since = _size(paths.console), loop.time()
    while loop.time() - since < quiet and loop.time() < deadline:
        await asyncio.sleep(0.05)
        if (now := _size(paths.console)) != size:
            size, since = now, loop.time()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def wait_marker(paths: InstancePaths, pid: int, guest_id: str, timeout: float, label: str) -> None:
    """Until the guest's console says ``MARKER``: a template guest has booted and its listener
    listens; a clone has taken its identity."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        text = paths.console.read_text(errors="replace") if paths.console.exists() else ""
        if MARKER in text:
            return
        if not process.is_guest_process(pid, guest_id):
            raise DriverError(detail=f"{label} ended before it printed {MARKER}; {process.last_words(paths)}")
        if loop.time() >= deadline:
            raise DriverError(detail=f"{label} did not print {MARKER} within {timeout:.0f} s")
        await asyncio.sleep(0.05)
