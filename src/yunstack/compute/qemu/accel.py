"""Choose the accelerator: KVM only when a bounded probe guest really boots under it, else TCG.

/dev/kvm existing is not enough: under nested virtualization KVM guests can hang or QEMU can
abort while setting MSRs for ``-cpu host``.  The probe boots the same machine type with
``-cpu host`` and the same firmware the guests get (SeaBIOS) from a 1 MiB disk whose boot sector
only writes to the ``isa-debug-exit`` port, so a working KVM makes QEMU exit with status 3 once
the firmware has run its power-on self test and handed over to the disk, within a fraction of a
second.  Anything else (error, abort, hang until the timeout, after which the probe is killed)
means TCG.  The answer is cached per process.

A probe that skipped the firmware (seven instructions at the reset vector) passed on a nested
host where every real guest then stopped inside SeaBIOS with "KVM internal error. Suberror: 1"
(an emulation failure on ``iret`` in 32-bit mode): the firmware is the part that must run.

Running the firmware was not enough either.  On a later kernel of the same nested host (kvm-pvm,
which emulates a guest's real mode and unpaged protected mode instruction by instruction) SeaBIOS
got through, and the probe passed, but every guest then stopped in its boot loader (SYSLINUX, at
``EIP=00008ffc``) on the same ``iret`` in 32-bit protected mode: KVM's instruction emulator
handles ``iret`` only in real mode.  So the probe's boot sector does what boot loaders do before
the kernel runs: it loads a GDT, enters 32-bit protected mode and returns through an ``iret``
there, then exits.  A host that cannot run that cannot start our guests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

from yunstack.config import QemuConfig
from yunstack.errors import DriverMisconfigured

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], str] = {}

# Loaded by the firmware at 0000:7C00 (GNU as, `.code16` then `.code32`; addresses absolute):
#   7C00 cli ; xor ax,ax ; mov ds,ax ; lgdt [7C50] ; mov eax,cr0 ; or al,1 ; mov cr0,eax
#        jmp 0008:7C18                                  ; 32-bit protected mode, no paging
#   7C18 mov ax,10h ; mov ds,ax ; mov ss,ax ; mov esp,7000h
#        pushfd ; push 8 ; push 7C2E ; iretd            ; what KVM's emulator cannot do here
#   7C2E mov al,1 ; out 0F4h,al ; hlt ; jmp $-1         ; isa-debug-exit: QEMU exits with 3
#   7C35 (padding) ; 7C38 GDT: null, code 0-4G (08h), data 0-4G (10h) ; 7C50 its descriptor
_BOOT_CODE = bytes([
    0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x66, 0x0F, 0x01, 0x16, 0x50, 0x7C, 0x0F, 0x20, 0xC0, 0x0C, 0x01,
    0x0F, 0x22, 0xC0, 0xEA, 0x18, 0x7C, 0x08, 0x00, 0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E, 0xD0,
    0xBC, 0x00, 0x70, 0x00, 0x00, 0x9C, 0x6A, 0x08, 0x68, 0x2E, 0x7C, 0x00, 0x00, 0xCF, 0xB0, 0x01,
    0xE6, 0xF4, 0xF4, 0xEB, 0xFD, 0x8D, 0x76, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00,
    0x17, 0x00, 0x38, 0x7C, 0x00, 0x00,
])
# isa-debug-exit makes QEMU exit with (value << 1) | 1.
_PROBE_EXIT = 3
# SeaBIOS will not read a disk smaller than a few sectors.
_DISK_BYTES = 1 << 20


def probe_boot_sector() -> bytes:
    """The probe disk's boot sector: our exit code, then the 0x55AA boot signature."""
    sector = bytearray(512)
    sector[: len(_BOOT_CODE)] = _BOOT_CODE
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def write_probe_disk(path: Path) -> None:
    """A raw 1 MiB disk (sparse) whose boot sector ends the probe."""
    with path.open("wb") as f:
        f.write(probe_boot_sector())
        f.truncate(_DISK_BYTES)


def probe_argv(qemu: QemuConfig, accel: str, disk: Path) -> list[str]:
    """The argv of one probe run."""
    return [
        qemu.binary, "-machine", qemu.machine, "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", "16", "-nodefaults", "-no-user-config", "-display", "none",
        "-drive", f"file={disk},format=raw,if=ide",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]


async def probe(qemu: QemuConfig, accel: str = "kvm") -> tuple[bool, str]:
    """Run the probe guest under ``accel``; return (usable, why) within the probe timeout."""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    with tempfile.TemporaryDirectory(prefix="yunstack-accel-") as tmp:
        disk = Path(tmp) / "probe.img"
        write_probe_disk(disk)
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe_argv(qemu, accel, disk),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return False, f"cannot run {qemu.binary}: {exc}"
        try:
            stopped, last = await asyncio.wait_for(_watch(proc), qemu.kvm_probe_timeout)
        except TimeoutError:
            stopped, last = False, f"probe guest did not finish within {qemu.kvm_probe_timeout}s"
        if not stopped:
            proc.kill()
            await proc.wait()
            return False, last
    if proc.returncode == _PROBE_EXIT:
        return True, "probe guest ran"
    return False, f"probe exited with status {proc.returncode}: {last}"


async def _watch(proc: asyncio.subprocess.Process) -> tuple[bool, str]:
    """(whether QEMU exited, its last stderr line); gives up at once on a KVM internal error.

    On such an error QEMU prints the guest's registers and pauses it rather than exiting, so
    waiting for the exit would only wait for the timeout.
    """
    assert proc.stderr is not None
    last = "no output"
    async for raw in proc.stderr:
        line = raw.decode(errors="replace").strip()
        if line:
            last = line
        if "KVM internal error" in line:
            return False, f"the probe guest stopped: {line}"
    await proc.wait()
    return True, last


async def choose_accel(qemu: QemuConfig) -> str:
    """Return "kvm" or "tcg" as ``qemu.accel`` asks; "auto" runs the probe once per process."""
    if qemu.accel in ("kvm", "tcg"):
        return qemu.accel
    if qemu.accel != "auto":
        raise DriverMisconfigured(detail=f"qemu.accel must be 'auto', 'kvm' or 'tcg', not {qemu.accel!r}")
    key = (qemu.binary, qemu.machine)
    if key not in _cache:
        usable, why = await probe(qemu, "kvm")
        _cache[key] = "kvm" if usable else "tcg"
        log.info("accelerator %s chosen: KVM %s (%s)", _cache[key], "usable" if usable else "unusable", why)
    return _cache[key]
