"""Memory templates (VM templating): do guests started from a saved, shared RAM file start faster
and share their memory?

    .venv/bin/python bench/templates.py [--clones 10] [--cold 10] [--memory 128] [--image PATH]
        [--ram-dir DIR] [--template-idle S] [--fill-mib N] [--keep-fpr] [--skip-identity]
        [--skip-cold] [--skip-balloon-check]

No control plane and no ``QemuDriver``: QEMU 7.2 under TCG is driven here directly over QMP, with
the driver's q35 command line (``cmdline.build_argv``'s devices: serial on a socket with a log
file, the root disk, four empty PCIe root ports, virtio-rng, the balloon) and ``-nic`` none.

1. **Template.** One guest boots the tiny image with its RAM in a file,
   ``-object memory-backend-file,id=pc.ram,mem-path=<ram-dir>/template.ram,share=on
   -machine memory-backend=pc.ram``, no NIC and no config drive.  When its console shell answers,
   it is stopped and its device state alone is saved (``x-ignore-shared``: the RAM stays in the
   file), ``migrate exec:cat > template.state``; then it quits.  Its root overlay is frozen.
2. **Clones**, one after the other, all kept running: the same command line with the file mapped
   ``share=off`` (private: copy on write, untouched pages shared through the page cache),
   ``-incoming defer``, ``x-ignore-shared``, ``migrate-incoming exec:cat template.state``; the
   guest runs on by itself when the state is in.  Each clone has its own overlay on the template's.
   - ``answer_ms``: launch of the QEMU process -> the console shell answers a command
     (``echo C<i>-$((6*7))`` printed ``C<i>-42``);
   - identity: after that a NIC (``-netdev user``, its own MAC; QEMU's built-in DHCP server) and a
     config drive (ISO, label config-2, its own hostname and uuid) are hot-plugged behind free root
     ports, and ``sh /run/resume.sh`` typed on the console (``RESUME``, written into the template
     guest before its save) mounts the drive, sets the hostname and runs DHCP: ``identity_ms`` is
     launch -> the script printed hostname, MAC and leased address; ``guest_clock_behind_s`` how
     far the guest's clock (the template's) is behind the host's;
   - ``urandom_first_read``: 16 bytes of ``/dev/urandom`` read first thing after the resume, per
     clone: equal values mean the clones' kernel RNGs were still one (no vmgenid in the guest).
3. **Cold boots** (``--cold``), one after the other, all kept running: the same image with a NIC
   and a config drive on the command line and anonymous RAM, as ``QemuDriver`` starts a server:
   ``cold_ready_ms`` is launch -> ``YUNSTACK-READY`` (identity, DHCP included) and
   ``cold_answer_ms`` launch -> the console shell answers.
4. **Memory** of each set while all of it runs: ``pss_mib`` from ``/proc/PID/smaps_rollup`` summed,
   with ``rss_mib``; for the clones also their mappings of the RAM file (``ram_*``: resident,
   shared with other processes, ``ram_private_dirty_mib`` = pages copied on write).  ``one_guest_rss_mib`` is the
   median RSS of one cold guest; the target is the clones' PSS sum < 2x that.
   With ``--floor``, what the fastest identity could cost under TCG, without any hot-plug: the
   template is saved *with* its NIC (user-mode, on the command line, as every clone's), and each
   clone, as soon as its console answers, is given its identity in one typed line (MAC set on the
   NIC it already has, hostname, DHCP): ``floor_ms`` is launch -> that line's answer.  No config
   drive is read and no ssh key made: a lower bound for any design, not one.
5. **Does the template file stay intact?** ``template_file_changed`` compares its sha256 before the
   clones and after they ran (with ``--fill-mib`` the template fills its tmpfs with random data and
   each clone deletes it, for free page reporting to discard; ``--keep-fpr`` leaves reporting on).
   ``balloon_check`` then inflates the first clone's balloon to half its RAM and looks again: QEMU
   7.2 discards ballooned pages with ``fallocate(PUNCH_HOLE)`` on the file even though the clone
   maps it private, so the holes land in every clone's template.  Clones and template therefore run
   with ``free-page-reporting=off`` unless ``--keep-fpr`` (the two must match, or the state does
   not load).

Prints and writes JSON (bench/results/templates.json).  Everything lives in one ``/tmp/yun-tpl-*``
directory (the RAM file in ``--ram-dir``, default that directory) and every QEMU is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

ROOT = Path(__file__).resolve().parents[1]
QEMU = "qemu-system-x86_64"
HOTPLUG_PORTS = 4
# The TCG translation buffer of every guest of the run, MiB (``--tb-size``; the driver's default).
SETTINGS = {"tb_size_mib": 32}
TIMEOUT = 180.0


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": pct(0.95),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


@dataclass
class Guest:
    """One QEMU process of this run and its files (all in ``dir``)."""

    name: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    typed: int = 0
    events: dict[str, float] = field(default_factory=dict)

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def serial(self) -> Path:
        return self.dir / "ser.sock"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)


def argv(guest: Guest, memory_mib: int, *, ram: Path | None = None, share: bool = True, incoming: bool = False,
         fpr: bool = True, nic_mac: str | None = None, config_iso: Path | None = None) -> list[str]:
    """The driver's q35 command line (``cmdline.build_argv``), with the RAM in ``ram`` when given."""
    machine = "q35" + (",memory-backend=pc.ram" if ram is not None else "")
    args = [QEMU, "-name", f"guest=yun-tpl-{guest.name},debug-threads=on", "-machine", machine,
            "-accel", f"tcg,tb-size={SETTINGS['tb_size_mib']}", "-cpu", "max", "-m", str(memory_mib), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", f"unix:{guest.qmp},server=on,wait=off",
            "-chardev", f"socket,id=console0,path={guest.serial},server=on,wait=off,logfile={guest.console},"
                        "logappend=on",
            "-device", "isa-serial,chardev=console0",
            "-drive", f"file={guest.disk},if=none,id=disk0,node-name=root0,format=qcow2,discard=unmap,cache=writeback",
            "-device", "virtio-blk-pci,drive=disk0,id=virtio-disk0,bootindex=0"]
    if ram is not None:
        args += ["-object", f"memory-backend-file,id=pc.ram,mem-path={ram},size={memory_mib}M,"
                            f"share={'on' if share else 'off'}"]
    if config_iso is not None:
        args += ["-drive", f"file={config_iso},if=none,id=config0,format=raw,readonly=on",
                 "-device", "virtio-blk-pci,drive=config0,id=virtio-config0"]
    if nic_mac is not None:
        args += ["-netdev", "user,id=net0", "-device", f"virtio-net-pci,netdev=net0,id=nic0,mac={nic_mac},romfile="]
    for index in range(HOTPLUG_PORTS):
        args += ["-device", f"pcie-root-port,id=hotplug{index},chassis={index + 1},bus=pcie.0"]
    args += ["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
             "-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,"
                        f"free-page-reporting={'on' if fpr else 'off'}"]
    if incoming:
        args += ["-incoming", "defer"]
    return args


async def migration_status(client: QMPClient) -> str:
    answer: dict[str, Any] = await client.execute("query-migrate")  # type: ignore[assignment]
    return str(answer.get("status"))


def launch(guest: Guest, args: list[str]) -> None:
    guest.dir.mkdir(parents=True, exist_ok=True)
    log = (guest.dir / "qemu.log").open("wb")
    guest.started = time.monotonic()
    guest.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    log.close()


def stop(guest: Guest) -> None:
    if guest.proc is not None and guest.proc.poll() is None:
        guest.proc.send_signal(signal.SIGKILL)
        guest.proc.wait(timeout=30)


async def connect(guest: Guest) -> QMPClient:
    client = QMPClient(guest.name)
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.connect(str(guest.qmp))
            return client
        except Exception:
            if guest.proc is not None and guest.proc.poll() is not None:
                raise RuntimeError(f"{guest.name}: QEMU exited: {(guest.dir / 'qemu.log').read_text()}") from None
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def wait_console(guest: Guest, pattern: str, timeout: float = TIMEOUT, start: int = 0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, guest.text()[start:])
        if found:
            return found
        if guest.proc is not None and guest.proc.poll() is not None:
            raise RuntimeError(f"{guest.name}: QEMU exited: {(guest.dir / 'qemu.log').read_text()}")
        if time.monotonic() > deadline:
            tail = "\n".join(guest.text().splitlines()[-10:])
            raise RuntimeError(f"{guest.name}: {pattern!r} not on the console in {timeout:.0f}s; tail:\n{tail}")
        await asyncio.sleep(0.01)


def type_line(guest: Guest, line: str) -> int:
    """Type ``line`` on the serial console; returns the console log's length before it."""
    before = len(guest.text())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(guest.serial))
        # Ctrl-C first: a line the shell took half of (its line editor's cursor-position query
        # swallows typed bytes) is dropped rather than left open.
        sock.sendall(b"\x03" + line.encode() + b"\n")
        # Hold the connection until the guest echoed the line: QEMU drops what the guest has
        # not read yet when the client goes.
        # The echo may be wrapped, so compare without white space.
        tail = re.sub(r"\s", "", line)[-12:]
        deadline = time.monotonic() + 10.0
        while tail not in re.sub(r"\s", "", guest.text()[before:]) and time.monotonic() < deadline:
            time.sleep(0.005)
    return before


async def wait_shell(guest: Guest) -> None:
    """Wait for the console shell's banner: it starts once cloud-init is done, and a Ctrl-C typed
    before (``type_line`` sends one) would reach cloud-init, on the same console, and end it."""
    await wait_console(guest, r"built-in shell")


async def ask(guest: Guest, command: str, answer: str, timeout: float = TIMEOUT, retry: float = 0.0) -> re.Match[str]:
    """Type ``command``; wait for ``answer`` (a regex) after it.  ``retry``: type it again every so often
    (a shell that is not there yet loses the line)."""
    deadline = time.monotonic() + timeout
    while True:
        start = type_line(guest, command)
        try:
            return await wait_console(guest, answer, timeout=retry or max(0.1, deadline - time.monotonic()),
                                      start=start)
        except RuntimeError:
            if not retry or time.monotonic() > deadline:
                raise


def memory(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        values[key] = int(value.split()[0]) / 1024
    return {"rss_mib": round(values["Rss"], 1), "pss_mib": round(values["Pss"], 1),
            "pss_anon_mib": round(values.get("Pss_Anon", 0), 1), "pss_file_mib": round(values.get("Pss_File", 0), 1),
            "pss_shmem_mib": round(values.get("Pss_Shmem", 0), 1)}


def ram_mapping(pid: int, path: Path) -> dict[str, float]:
    """The guest RAM's mapping of ``path`` in ``/proc/PID/smaps``: what the clone shares (page cache
    pages of the file) and what it copied on write (``Private_Dirty``: anonymous pages)."""
    values: dict[str, float] = {}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            inside = line.endswith(str(path))
        elif inside and line.endswith(" kB"):
            key, value = line.split(":", 1)
            values[key] = values.get(key, 0) + int(value.split()[0]) / 1024
    # Shared pages are dirty while the kernel has not yet written the template's file back.
    return {"ram_rss_mib": round(values.get("Rss", 0), 1), "ram_pss_mib": round(values.get("Pss", 0), 1),
            "ram_shared_mib": round(values.get("Shared_Clean", 0) + values.get("Shared_Dirty", 0), 1),
            "ram_private_clean_mib": round(values.get("Private_Clean", 0), 1),
            "ram_private_dirty_mib": round(values.get("Private_Dirty", 0), 1)}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def allocated_mib(path: Path) -> float:
    return round(path.stat().st_blocks * 512 / (1 << 20), 1)


def config_iso(work: Path, name: str, hostname: str) -> Path:
    tree = work / f"cfg-{name}"
    latest = tree / "openstack" / "latest"
    latest.mkdir(parents=True)
    meta = {"uuid": str(uuid.uuid4()), "name": hostname, "hostname": hostname, "launch_index": 0,
            "random_seed": os.urandom(64).hex()}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    iso = work / f"cfg-{name}.iso"
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), "-V", "config-2", "-J", "-r", "-l", str(tree)],
                   check=True)
    shutil.rmtree(tree)
    return iso


def overlay(base: Path, path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(path)], check=True)


def mac(index: int) -> str:
    return f"52:54:00:7e:00:{index:02x}"


# What the guest's init would run on resume (``sh /run/resume.sh N``): wait for the hot-plugged
# NIC and config drive, read the drive, set the hostname, mix the drive's random_seed into the
# kernel RNG (a write mixes but neither credits nor reseeds), run DHCP; print the identity and the
# guest's uptime at each step.  The tiny image has no such hook yet: the bench writes the script
# into the template guest before it is saved, so every clone has it.
RESUME = r"""u() { cut -d' ' -f1 /proc/uptime; }
t0=$(u); i=0
while [ $i -lt 200 ] && ! { [ -e /sys/class/net/eth0 ] && findfs LABEL=config-2 >/dev/null; }; do
  usleep 20000; i=$((i+1))
done
t1=$(u); mkdir -p /run/c; mount -o ro $(findfs LABEL=config-2) /run/c
md=/run/c/openstack/latest/meta_data.json
hostname $(sed -n 's/.*"hostname": "\([^"]*\)".*/\1/p' $md)
sed -n 's/.*"random_seed": "\([^"]*\)".*/\1/p' $md > /dev/urandom
t2=$(u); ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
a=$(ip -4 -o addr show dev eth0 | awk '{print $4}')
echo ID$1-$(hostname)-$(cat /sys/class/net/eth0/address)-$a-DI $t0 $t1 $t2 $(u) UP $(date +%s) CLK
"""


# ``--floor``: the template's NIC, which every clone has on its command line too (its MAC is in the
# device state; the guest sets its own).
FLOOR_MAC = "52:54:00:7e:00:ff"
# Written into the template like ``RESUME``, so that the typed line is short: a line longer than
# the console is redrawn by the shell's line editor, and ``type_line`` would wait for its echo.
FLOOR = r"""ip link set eth0 down; ip link set eth0 address $2; hostname clone$1; ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
echo FL$1-$(hostname)-$(cat /sys/class/net/eth0/address)-$(ip -4 -o addr show dev eth0 | awk '{print $4}')-LF
"""


async def make_template(work: Path, image: Path, ram: Path, memory_mib: int, fpr: bool,
                        idle: float, fill_mib: int, nic: bool = False) -> dict[str, Any]:
    guest = Guest("template", work / "template")
    guest.dir.mkdir()
    overlay(image, guest.disk)
    launch(guest, argv(guest, memory_mib, ram=ram, share=True, fpr=fpr, nic_mac=FLOOR_MAC if nic else None))
    try:
        await wait_console(guest, r"YUNSTACK-READY")
        ready_ms = guest.elapsed_ms()
        await wait_shell(guest)
        await ask(guest, "echo T-$((6*7))", r"T-42", retry=1.0)
        answer_ms = guest.elapsed_ms()
        script = base64.b64encode(RESUME.encode()).decode()
        await ask(guest, f"echo {script} | base64 -d > /run/resume.sh; echo S-$((6*7))", r"S-42", timeout=60)
        script = base64.b64encode(FLOOR.encode()).decode()
        await ask(guest, f"echo {script} | base64 -d > /run/floor.sh; echo S-$((6*7))", r"S-42", timeout=60)
        if fill_mib:
            await ask(guest, f"head -c {fill_mib}M /dev/urandom > /run/fill; echo F-$((6*7))", r"F-42", timeout=120)
        await asyncio.sleep(idle)  # let the guest settle (or age: the kernel RNG reseeds less often)
        client = await connect(guest)
        t0 = time.monotonic()
        await client.execute("stop")
        await client.execute("migrate-set-capabilities",
                             {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        await client.execute("migrate", {"uri": f"exec:cat > {work / 'template.state'}"})
        while (status := await migration_status(client)) not in ("completed", "failed"):
            await asyncio.sleep(0.01)
        save_ms = round((time.monotonic() - t0) * 1000, 1)
        if status != "completed":
            raise RuntimeError(f"saving the template failed: {await client.execute('query-migrate')}")
        await client.execute("quit")
        with contextlib.suppress(Exception):  # QEMU may close the socket before we do
            await client.disconnect()
        guest.proc.wait(timeout=30)  # type: ignore[union-attr]
    finally:
        stop(guest)
    state = work / "template.state"
    return {"boot_to_ready_ms": ready_ms, "boot_to_answer_ms": answer_ms, "save_ms": save_ms,
            "state_kib": round(state.stat().st_size / 1024, 1), "ram_file_allocated_mib": allocated_mib(ram),
            "console": guest.text()}


async def start_clone(guests: list[Guest], index: int, work: Path, template_disk: Path, ram: Path, memory_mib: int,
                      fpr: bool, identity: bool, free_fill: bool, floor: bool = False) -> dict[str, Any]:
    guest = Guest(f"clone{index}", work / f"clone{index}")
    guests.append(guest)
    guest.dir.mkdir()
    overlay(template_disk, guest.disk)
    iso = config_iso(work, guest.name, f"clone{index}")
    launch(guest, argv(guest, memory_mib, ram=ram, share=False, incoming=True, fpr=fpr,
                       nic_mac=FLOOR_MAC if floor else None))
    client = await connect(guest)
    row: dict[str, Any] = {"qmp_ms": guest.elapsed_ms()}
    await client.execute("migrate-set-capabilities",
                         {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    await client.execute("migrate-incoming", {"uri": f"exec:cat {work / 'template.state'}"})
    # The template was saved stopped, so the clone stays paused ("paused" in the saved global
    # state) once the state is in: cont then.
    while (status := await migration_status(client)) not in ("completed", "failed"):
        await asyncio.sleep(0.002)
    if status != "completed":
        raise RuntimeError(f"{guest.name}: loading the template state failed: {(guest.dir / 'qemu.log').read_text()}")
    row["loaded_ms"] = guest.elapsed_ms()
    await client.execute("cont")
    row["running_ms"] = guest.elapsed_ms()
    if floor:
        found = await ask(guest, f"sh /run/floor.sh {index} {mac(index)}",
                          rf"FL{index}-([^-\s]+)-([0-9a-f:]+)-(\S*)-LF", timeout=30, retry=1.5)
        row["floor_ms"] = guest.elapsed_ms()
        row["identity"] = {"hostname": found.group(1), "mac": found.group(2), "address": found.group(3)}
        row["identity_ok"] = (found.group(1) == f"clone{index}" and found.group(2) == mac(index)
                              and found.group(3).startswith("10.0.2."))
        row["rebooted"] = "YUNSTACK-BOOT" in guest.text()
        await client.disconnect()
        return row
    # First thing: what the kernel RNG gives (before the shell answers anything else).
    match = await ask(guest, f"echo C{index}-$((6*7)) $(head -c 16 /dev/urandom | md5sum)",
                      rf"C{index}-42 ([0-9a-f]{{32}})", timeout=30, retry=0.5)
    row["answer_ms"] = guest.elapsed_ms()
    row["urandom_first_read"] = match.group(1)
    if free_fill:
        # Pages that hold template data, freed: free page reporting (or a balloon) discards them.
        await ask(guest, "rm -f /run/fill; echo R-$((6*7))", r"R-42", timeout=30)
    if identity:
        await client.execute("netdev_add", {"type": "user", "id": "net0"})
        await client.execute("device_add", {"driver": "virtio-net-pci", "netdev": "net0", "id": "nic0",
                                            "mac": mac(index), "romfile": "", "bus": "hotplug0"})
        await client.execute("blockdev-add", {"driver": "raw", "node-name": "config0", "read-only": True,
                                              "file": {"driver": "file", "filename": str(iso), "read-only": True}})
        await client.execute("device_add", {"driver": "virtio-blk-pci", "drive": "config0", "id": "virtio-config0",
                                            "bus": "hotplug1"})
        row["plugged_ms"] = guest.elapsed_ms()
        found = await ask(guest, f"sh /run/resume.sh {index}",
                          rf"ID{index}-([^-\s]+)-([0-9a-f:]+)-(\S*)-DI (\S+) (\S+) (\S+) (\S+) UP (\d+) CLK",
                          timeout=60)
        row["identity_ms"] = guest.elapsed_ms()
        row["identity"] = {"hostname": found.group(1), "mac": found.group(2), "address": found.group(3)}
        # Guest uptime at: script start, NIC and drive seen, drive read and hostname set, lease.
        up = [float(found.group(i)) for i in range(4, 8)]
        row["guest_devices_seen_ms"] = round((up[1] - up[0]) * 1000)
        row["guest_config_read_ms"] = round((up[2] - up[1]) * 1000)
        row["guest_dhcp_ms"] = round((up[3] - up[2]) * 1000)
        # The guest's clock is the template's: it is behind by the time since the save.
        row["guest_clock_behind_s"] = round(time.time() - int(found.group(8)))
        row["identity_ok"] = (found.group(1) == f"clone{index}" and found.group(2) == mac(index)
                              and found.group(3).startswith("10.0.2."))
    row["rebooted"] = "YUNSTACK-BOOT" in guest.text()
    await client.disconnect()
    return row


# What may differ between a template and a guest started from it (``--variants``): each entry
# changes the clone's command line one way; the result says whether QEMU loads the state and the
# guest answers.
VARIANTS = ("nothing", "tb-size 64", "RAM file at another path", "NIC on the command line",
            "free-page-reporting on", "no balloon", "3 root ports", "smp 2", "memory 256 MiB",
            "machine pc-q35-7.1", "cpu qemu64", "anonymous RAM", "no x-ignore-shared")


def variant_argv(args: list[str], name: str, copy: Path) -> list[str]:
    out = list(args)

    def index(prefix: str) -> int:
        return next(i for i, arg in enumerate(out) if arg.startswith(prefix))

    def drop(prefix: str) -> None:
        i = index(prefix)
        del out[i - 1:i + 1]

    if name == "tb-size 64":
        out[index("tcg,tb-size")] = "tcg,tb-size=64" if SETTINGS["tb_size_mib"] != 64 else "tcg,tb-size=32"
    elif name == "RAM file at another path":
        i = index("memory-backend-file")
        out[i] = re.sub(r"mem-path=[^,]*", f"mem-path={copy}", out[i])
    elif name == "NIC on the command line":
        out[-2:-2] = ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:7e:01:01"]
    elif name == "free-page-reporting on":
        out[index("virtio-balloon")] = "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on"
    elif name == "no balloon":
        drop("virtio-balloon")
    elif name == "3 root ports":
        drop(f"pcie-root-port,id=hotplug{HOTPLUG_PORTS - 1}")
    elif name == "smp 2":
        out[out.index("-smp") + 1] = "2"
    elif name == "memory 256 MiB":
        out[out.index("-m") + 1] = "256"
        i = index("memory-backend-file")
        out[i] = re.sub(r"size=\d+M", "size=256M", out[i])
    elif name == "machine pc-q35-7.1":
        out[index("q35,memory-backend")] = "pc-q35-7.1,memory-backend=pc.ram"
    elif name == "cpu qemu64":
        out[out.index("-cpu") + 1] = "qemu64"
    elif name == "anonymous RAM":
        out[index("q35,memory-backend")] = "q35"
        drop("memory-backend-file")
    return out


async def try_variant(guests: list[Guest], index: int, name: str, work: Path, ram: Path,
                      memory_mib: int) -> dict[str, Any]:
    guest = Guest(f"variant{index}", work / f"variant{index}")
    guests.append(guest)
    guest.dir.mkdir()
    overlay(work / "template" / "disk.qcow2", guest.disk)
    launch(guest, variant_argv(argv(guest, memory_mib, ram=ram, share=False, incoming=True, fpr=False), name,
                               work / "copy.ram"))
    row: dict[str, Any] = {"variant": name}
    client = QMPClient(guest.name)
    try:
        client = await connect(guest)
        if name != "no x-ignore-shared":
            await client.execute("migrate-set-capabilities",
                                 {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        await client.execute("migrate-incoming", {"uri": f"exec:cat {work / 'template.state'}"})
        status = "active"
        while guest.proc is not None and guest.proc.poll() is None:
            if (status := await migration_status(client)) in ("completed", "failed"):
                break
            await asyncio.sleep(0.01)
        if status != "completed":
            raise RuntimeError(f"state not loaded ({status})")
        await client.execute("cont")
        await ask(guest, "echo V-$((6*7))", r"V-42", timeout=20, retry=2.0)
        row.update(result="answers", answer_ms=guest.elapsed_ms())
    except Exception:  # a refusal is the result
        await asyncio.sleep(0.3)
        log = [line for line in (guest.dir / "qemu.log").read_text().splitlines() if line.strip()]
        loaded = not log and guest.proc is not None and guest.proc.poll() is None
        row.update(result="loaded, does not answer" if loaded else "refused", qemu_said=log[-3:])
    finally:
        with contextlib.suppress(Exception):  # QEMU may have gone: the goodbye fails
            await client.disconnect()
        stop(guest)
    return row


async def balloon_check(guest: Guest, ram: Path, memory_mib: int) -> dict[str, Any]:
    """Inflate one clone's balloon to half its RAM: does that change the template's file?"""
    before = {"allocated_mib": allocated_mib(ram), "sha256": sha256(ram)}
    client = await connect(guest)
    await client.execute("balloon", {"value": (memory_mib // 2) << 20})
    actual = memory_mib
    for _ in range(40):
        await asyncio.sleep(0.5)
        answer: dict[str, Any] = await client.execute("query-balloon")  # type: ignore[assignment]
        if (actual := int(answer["actual"]) >> 20) <= memory_mib // 2:
            break
    await asyncio.sleep(1.0)
    await client.disconnect()
    return {"balloon_target_mib": memory_mib // 2, "balloon_actual_mib": actual,
            "file_allocated_mib_before": before["allocated_mib"], "file_allocated_mib_after": allocated_mib(ram),
            "file_changed": sha256(ram) != before["sha256"]}


async def cold_boot(guests: list[Guest], index: int, work: Path, image: Path, memory_mib: int) -> dict[str, Any]:
    guest = Guest(f"cold{index}", work / f"cold{index}")
    guests.append(guest)
    guest.dir.mkdir()
    overlay(image, guest.disk)
    iso = config_iso(work, guest.name, f"cold{index}")
    launch(guest, argv(guest, memory_mib, nic_mac=mac(0x80 + index), config_iso=iso))
    await wait_console(guest, r"YUNSTACK-READY")
    row: dict[str, Any] = {"ready_ms": guest.elapsed_ms()}
    await wait_shell(guest)
    await ask(guest, f"echo K{index}-$((6*7))", rf"K{index}-42", retry=0.5)
    row["answer_ms"] = guest.elapsed_ms()
    return row


def totals(guests: list[Guest], ram: Path | None = None) -> dict[str, Any]:
    rows = [memory(g.proc.pid) | (ram_mapping(g.proc.pid, ram) if ram else {}) for g in guests if g.proc is not None]
    return {"n": len(rows), "pss_mib": round(sum(r["pss_mib"] for r in rows), 1),
            "rss_mib": round(sum(r["rss_mib"] for r in rows), 1),
            "pss_anon_mib": round(sum(r["pss_anon_mib"] for r in rows), 1),
            "pss_file_mib": round(sum(r["pss_file_mib"] for r in rows), 1),
            "pss_shmem_mib": round(sum(r["pss_shmem_mib"] for r in rows), 1),
            "per_guest": rows,
            **({key: round(sum(r[key] for r in rows), 1) for key in rows[0] if key.startswith("ram_")}
               if ram and rows else {})}


async def run(args: argparse.Namespace, image: Path, work: Path) -> dict[str, Any]:
    ram_dir = Path(args.ram_dir) if args.ram_dir else work
    ram = ram_dir / f"yun-tpl-{work.name}.ram" if args.ram_dir else work / "template.ram"
    guests: list[Guest] = []
    result: dict[str, Any] = {}
    try:
        template = await make_template(work, image, ram, args.memory, fpr=args.keep_fpr,
                                         idle=args.template_idle, fill_mib=args.fill_mib, nic=args.floor)
        template.pop("console")
        result["template"] = template
        digest = sha256(ram)
        clone_rows = []
        for index in range(args.clones):
            clone_rows.append(await start_clone(guests, index, work, work / "template" / "disk.qcow2", ram,
                                                args.memory, fpr=args.keep_fpr, identity=not args.skip_identity,
                                                free_fill=args.fill_mib > 0, floor=args.floor))
        await asyncio.sleep(args.settle)
        clones = totals(guests, ram)
        clones["pss_by_guest_mib"] = [r["pss_mib"] for r in clones.pop("per_guest")]
        if args.floor:
            result["clones"] = {
                "floor_ms": summary([r["floor_ms"] for r in clone_rows]),
                "running_ms": summary([r["running_ms"] for r in clone_rows]),
                "identity_ok": sum(r["identity_ok"] for r in clone_rows),
                "identities": [r["identity"] for r in clone_rows], "memory": clones,
                "rebooted": sum(r["rebooted"] for r in clone_rows)}
            return result
        seeds = [r["urandom_first_read"] for r in clone_rows]
        result["clones"] = {
            "answer_ms": summary([r["answer_ms"] for r in clone_rows]),
            "loaded_ms": summary([r["loaded_ms"] for r in clone_rows]),
            "running_ms": summary([r["running_ms"] for r in clone_rows]),
            "qmp_ms": summary([r["qmp_ms"] for r in clone_rows]),
            "memory": clones,
            "urandom_first_read": seeds,
            "urandom_distinct": len(set(seeds)),
            "rebooted": sum(r["rebooted"] for r in clone_rows),
        }
        if not args.skip_identity:
            result["clones"]["plugged_ms"] = summary([r["plugged_ms"] for r in clone_rows])
            result["clones"]["identity_ms"] = summary([r["identity_ms"] for r in clone_rows])
            result["clones"]["guest_clock_behind_s"] = [r["guest_clock_behind_s"] for r in clone_rows]
            for key in ("guest_devices_seen_ms", "guest_config_read_ms", "guest_dhcp_ms"):
                result["clones"][key] = summary([r[key] for r in clone_rows])
            result["clones"]["identity_ok"] = sum(r["identity_ok"] for r in clone_rows)
            result["clones"]["identities"] = [r["identity"] for r in clone_rows]
        if args.variants:
            shutil.copyfile(ram, work / "copy.ram")
            result["variants"] = [await try_variant(guests, i, name, work, ram, args.memory)
                                  for i, name in enumerate(VARIANTS)]
            guests[:] = [g for g in guests if not g.name.startswith("variant")]
        result["template_file_changed"] = sha256(ram) != digest
        if guests and not args.skip_balloon_check:
            result["balloon_check"] = await balloon_check(guests[0], ram, args.memory)
        for guest in guests:
            stop(guest)
        guests.clear()
        result["template_file_allocated_mib_after"] = allocated_mib(ram)
        if not args.skip_cold:
            cold_rows = []
            for index in range(args.cold):
                cold_rows.append(await cold_boot(guests, index, work, image, args.memory))
            await asyncio.sleep(args.settle)
            cold = totals(guests)
            rss = [r["rss_mib"] for r in cold["per_guest"]]
            cold["pss_by_guest_mib"] = [r["pss_mib"] for r in cold.pop("per_guest")]
            result["cold"] = {"ready_ms": summary([r["ready_ms"] for r in cold_rows]),
                              "answer_ms": summary([r["answer_ms"] for r in cold_rows]), "memory": cold}
            one = statistics.median(rss)
            result["one_guest_rss_mib"] = round(one, 1)
            result["clones_pss_over_one_guest_rss"] = round(result["clones"]["memory"]["pss_mib"] / one, 2)
            result["clones_pss_over_cold_pss"] = round(result["clones"]["memory"]["pss_mib"] / cold["pss_mib"], 3)
    finally:
        for guest in guests:
            stop(guest)
        if args.ram_dir:
            ram.unlink(missing_ok=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clones", type=int, default=10)
    ap.add_argument("--cold", type=int, default=10, help="cold-booted guests to compare with")
    ap.add_argument("--memory", type=int, default=128, help="guest RAM, MiB")
    ap.add_argument("--image", default=None, help="the tiny image's qcow2 (default: build it)")
    ap.add_argument("--ram-dir", default=None, help="where the template's RAM file goes (default: the work dir)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait before reading memory")
    ap.add_argument("--template-idle", type=float, default=2.0,
                    help="seconds the template guest idles before it is saved")
    ap.add_argument("--fill-mib", type=int, default=0,
                    help="the template writes this much random data to its tmpfs; each clone deletes it")
    ap.add_argument("--skip-balloon-check", action="store_true",
                    help="do not inflate the first clone's balloon at the end (it punches the template file)")
    ap.add_argument("--variants", action="store_true",
                    help="also start one clone per VARIANTS entry: what may differ from the template")
    ap.add_argument("--tb-size", type=int, default=32, help="TCG translation buffer of every guest, MiB")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="template saved with its NIC; each clone's identity in one typed line (a lower bound)")
    ap.add_argument("--skip-identity", action="store_true", help="no NIC or config drive hot-plug on the clones")
    ap.add_argument("--keep-fpr", action="store_true", help="clones keep free page reporting (see the docstring)")
    ap.add_argument("--keep-work", action="store_true", help="keep the /tmp/yun-tpl-* directory (debugging)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/templates.json"))
    args = ap.parse_args()
    SETTINGS["tb_size_mib"] = args.tb_size
    # A SIGTERM (timeout(1), a CI job cancelled) unwinds like Ctrl-C, so the QEMUs are killed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="yun-tpl-", dir="/tmp"))
    try:
        if args.image:
            image = Path(args.image)
        else:
            from yunstack.image.tiny.build import build_tiny_image
            image = build_tiny_image(work / "image")
        load_start = [round(x, 2) for x in os.getloadavg()]
        result: dict[str, Any] = {
            "benchmark": "templates",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "bench/templates.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
                for k, v in vars(args).items() if v not in (None, False) and k not in ("out", "image")),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "kvm": os.access("/dev/kvm", os.W_OK), "load_average_at_start": load_start,
                        "qemu": subprocess.run([QEMU, "--version"], capture_output=True,
                                               text=True).stdout.split("\n")[0]},
            "accel": "tcg", "tcg_tb_size_mib": args.tb_size, "machine_type": "q35", "memory_mib": args.memory,
            "target_clone_answer_ms": 500, "target_clones_pss_over_one_guest_rss": 2.0,
        }
        result.update(asyncio.run(run(args, image, work)))
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
