"""Facts about this host for ``host_info``, read from /proc and statvfs."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def meminfo_mib() -> tuple[int, int]:
    """(total, used) host memory in MiB; used = total - MemAvailable."""
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    total = values["MemTotal"] // 1024
    return total, total - values.get("MemAvailable", values.get("MemFree", 0)) // 1024


def disk_gb(path: Path) -> tuple[int, int]:
    """(total, used) GiB of the filesystem holding ``path``."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    used = total - st.f_bavail * st.f_frsize
    return total // 1024**3, used // 1024**3


def cpu_info() -> str:
    """Nova-style ``cpu_info`` JSON: arch, model, vendor, topology, features."""
    model = vendor = ""
    flags: list[str] = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "flags" and not flags:
            flags = sorted(value.split())
    count = os.cpu_count() or 1
    return json.dumps({
        "arch": platform.machine(), "model": model, "vendor": vendor,
        "topology": {"sockets": 1, "cores": count, "threads": 1}, "features": flags,
    })


def uptime() -> str:
    """Like the output of ``uptime``: `` 07:30:01 up 1 day,  2:03,  0 users,  load average: …``."""
    seconds = int(float(Path("/proc/uptime").read_text().split()[0]))
    days, rest = divmod(seconds, 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    span = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    span += f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    load = ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f" {time.strftime('%H:%M:%S')} up {span},  0 users,  load average: {load}"


def hypervisor_version(version_output: str) -> int:
    """Nova's integer version from ``qemu-system-x86_64 --version``: 7.2.22 -> 7002022."""
    for word in version_output.split():
        parts = word.split("(")[0].split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            major, minor, micro = (int(p) for p in [*parts, "0"][:3])
            return major * 1_000_000 + minor * 1000 + micro
    return 0
