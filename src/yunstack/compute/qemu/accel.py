"""Choose the accelerator: KVM only when a bounded probe guest really runs under it, else TCG.

/dev/kvm existing is not enough: under nested virtualization KVM guests can hang or QEMU can
abort while setting MSRs for ``-cpu host``.  The probe starts the same machine type with
``-cpu host`` and a 64 KiB firmware that only writes to the ``isa-debug-exit`` port, so a
working KVM makes QEMU exit with status 3 within milliseconds.  Anything else (error, abort,
hang until the timeout, after which the probe is killed) means TCG.  The answer is cached per
process.
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

# mov al,1 ; out 0xf4,al ; hlt ; jmp $-1   at the reset vector F000:FFF0.
_RESET_CODE = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
# isa-debug-exit makes QEMU exit with (value << 1) | 1.
_PROBE_EXIT = 3


def probe_firmware() -> bytes:
    """The probe's firmware image: 64 KiB of ``hlt`` with our exit code at the reset vector."""
    image = bytearray(b"\xf4" * 65536)
    image[0xFFF0 : 0xFFF0 + len(_RESET_CODE)] = _RESET_CODE
    return bytes(image)


def probe_argv(qemu: QemuConfig, accel: str, firmware: Path) -> list[str]:
    """The argv of one probe run."""
    return [
        qemu.binary, "-machine", qemu.machine, "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", "16", "-nodefaults", "-no-user-config", "-display", "none",
        "-bios", str(firmware), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]


async def probe(qemu: QemuConfig, accel: str = "kvm") -> tuple[bool, str]:
    """Run the probe guest under ``accel``; return (usable, why) within the probe timeout."""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    with tempfile.TemporaryDirectory(prefix="yunstack-accel-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(probe_firmware())
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe_argv(qemu, accel, firmware),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return False, f"cannot run {qemu.binary}: {exc}"
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), qemu.kvm_probe_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"probe guest did not finish within {qemu.kvm_probe_timeout}s"
    if proc.returncode == _PROBE_EXIT:
        return True, "probe guest ran"
    lines = stderr.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else "no output"
    return False, f"probe exited with status {proc.returncode}: {last}"


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
