"""Memory templates on a real cloud: N servers started from one template against cold boots.

Starts a real ``yun up`` (QEMU, the Linux dataplane) on a free loopback port with a fresh state
dir.  As the demo project: a network with a subnet (10.95.0.0/24), the tiny image again as
``tiny-tpl`` with ``yunstack:memory_template=true`` (``yun up``'s own ``tiny`` is the cold one),
then, one server at a time, each on the network with a user_data script that prints its MAC:

1. ``--cold`` servers of ``tiny``: cold boots.  Their RSS and PSS are read once all have booted
   and settled, then they are deleted.
2. one server of ``tiny-tpl`` (it boots; the host then makes the template beside it), and the
   wait until the template is made (``<state>/instances/.templates/<key>/template.json``).
3. ``--clones`` servers of ``tiny-tpl``, started from the template, all kept running.

Per server, ``ready_ms`` is from its QEMU process's start (``/proc/PID/stat``, 10 ms ticks) to its
``YUNSTACK-READY`` line (the console log's mtime when the line was first seen, polled every 10 ms:
the line is the last the guest prints), so it is the host's and the guest's work, not the API's;
``phases_ms`` times each of ``PHASES`` the same way (its first sight, from the QEMU's start).
For a clone that is: QEMU's start, the state's load, its identity written to its identity port, and
the guest's resume (its files, hostname, RNG, its own MAC and the address its host says DHCP gives
it, ssh host key, dropbear, user_data); its config drive is plugged in after READY, and its DHCP
lease is timed apart (``lease_ms``, the guest's ``YUNSTACK-LEASE`` line, looked for after READY, so
an upper bound).  Identity: each clone's hostname, address, leased address and MAC from its console
against the API's name, address and port.
Memory, with all clones running and settled for ``--settle`` s: the sum of the clones' PSS
(``/proc/PID/smaps_rollup``: the template's shared page cache is divided among them, so the sum
counts it once) against one cold guest's RSS (the median of the cold ones); ``memory_parts`` splits
each guest's PSS into guest RAM, TCG's translation buffer and the rest of QEMU (``/proc/PID/smaps``).
Target: each clone ready in <= 500 ms, and the clones together under 2x one guest's RSS.

    .venv/bin/python bench/template_clones.py [--clones 10] [--cold 3] [--settle 10]

Needs root, QEMU and the tiny image's tools.  Prints and writes JSON
(bench/results/template_clones.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cloud import RunningCloud, start_cloud  # noqa: E402

DEMO = "yunstack-demo"
# The guest's lines in the order it prints them; each one's first sight is timed, so a clone's
# ready_ms splits into its phases (a cold guest prints no YUNSTACK-RESUME).
PHASES = ("YUNSTACK-RESUME", "YUNSTACK-METADATA", "YUNSTACK-SSH-HOSTKEY", "MAC=", "YUNSTACK-READY")
READY = re.compile(r"YUNSTACK-READY hostname=(\S+) ip=(\S+) instance-id=(\S+)")
MAC = re.compile(r"MAC=([0-9a-f:]{17})")
# The guest's DHCP client prints this when it has its lease; a clone's READY may come before it (its
# host gave it the address the lease confirms), so it is waited for after READY.
LEASE = re.compile(r"YUNSTACK-LEASE interface=eth0 ip=(\S+)")
LEASE_WAIT = 10.0
USER_DATA = '#!/bin/sh\necho "MAC=$(cat /sys/class/net/eth0/address)"\n'
TICK = os.sysconf("SC_CLK_TCK")
RAM_MIB = 128  # m1.nano


def boot_time() -> float:
    """The wall clock at boot, to the microsecond: a process's start time counts from it (the boot
    clock).  Not /proc/stat's ``btime``, which is whole seconds: it put every start up to a second
    early, and every time measured from one that much too long (0.90 s on 2026-12-06's boot)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def qemu_pid(server_id: str, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if f"guest={server_id},".encode() in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
        time.sleep(0.01)
    raise RuntimeError(f"no QEMU for {server_id} within {timeout}s")


def started_at(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return boot_time() + int(stat[19]) / TICK  # field 22, starttime, in clock ticks since boot


def memory(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key.strip()] = int(rest.split()[0]) * 1024
    return {"rss": values["Rss"], "pss": values["Pss"], "private": values["Private_Clean"] + values["Private_Dirty"]}


MAPPING = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)")


def memory_parts(pid: int, ram_mib: int) -> dict[str, dict[str, int]]:
    """The process's PSS and private bytes by what they are (``/proc/PID/smaps``): ``guest_ram``
    (the mapping of the guest's RAM: anonymous in a cold guest, the template's ``ram`` file mapped
    private in a clone), ``tcg`` (TCG's translation buffer: the executable anonymous mapping of
    ``tb-size``) and ``qemu`` (everything else: heap, ROMs, libraries, device state)."""
    parts = {part: {"pss": 0, "private": 0} for part in ("guest_ram", "tcg", "qemu")}
    part = "qemu"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if (head := MAPPING.match(line)) is not None:
            kib = (int(head[2], 16) - int(head[1], 16)) // 1024
            path = head[4]
            if kib == ram_mib * 1024 and (not path or path.endswith("/ram")):
                part = "guest_ram"
            elif "x" in head[3] and not path and 31 * 1024 <= kib <= 33 * 1024:
                part = "tcg"
            else:
                part = "qemu"
            continue
        key, _, rest = line.partition(":")
        if key == "Pss":
            parts[part]["pss"] += int(rest.split()[0]) * 1024
        elif key in ("Private_Clean", "Private_Dirty"):
            parts[part]["private"] += int(rest.split()[0]) * 1024
    return parts


def boot(cloud: RunningCloud, image: str, name: str, userdata: Path, timeout: float = 300.0) -> dict[str, Any]:
    """Create one server and time its QEMU's start to its READY line; its identity from the console."""
    made = cloud.osc_json("server", "create", "--image", image, "--flavor", "m1.nano", "--network", "bn",
                          "--user-data", str(userdata), name, cloud=DEMO)
    server_id = str(made["id"])
    # The first QEMU seen may be the one that daemonizes (its child runs the guest): its start is
    # the launch; the guest's process is the pidfile's.
    began = started_at(qemu_pid(server_id))
    console = cloud.state_dir / "instances" / server_id / "console.log"
    deadline = time.monotonic() + timeout
    phases: dict[str, int] = {}
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace") if console.exists() else ""
        for marker in PHASES:
            if marker not in phases and marker in text:
                phases[marker] = round((time.time() - began) * 1000)
        if READY.search(text) and MAC.search(text):
            ready_at = console.stat().st_mtime
            break
        time.sleep(0.01)
    else:
        raise RuntimeError(f"{name}: no YUNSTACK-READY within {timeout}s:\n{text[-1500:]}")
    found = READY.findall(text)[-1]
    lease_deadline = time.monotonic() + LEASE_WAIT
    while not LEASE.search(text) and time.monotonic() < lease_deadline:
        time.sleep(0.01)
        text = console.read_text(errors="replace")
    leased = LEASE.findall(text)
    lease_ms = round((time.time() - began) * 1000) if leased else None
    pid = int((cloud.state_dir / "instances" / server_id / "qemu.pid").read_text())
    shown = cloud.osc_json("server", "show", server_id, cloud=DEMO)
    (port,) = cloud.osc_json("port", "list", "--server", server_id, cloud=DEMO)
    return {"name": name, "id": server_id, "pid": pid, "ready_ms": round((ready_at - began) * 1000),
            "phases_ms": phases, "lease_ms": lease_ms, "lease_ip": leased[-1] if leased else None,
            "resumed": "YUNSTACK-RESUME" in text, "hostname": found[0], "ip": found[1],
            "mac": MAC.findall(text)[-1], "api_ip": re.findall(r"10\.95\.0\.\d+", json.dumps(shown["addresses"])),
            "api_mac": port["MAC Address"]}


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clones", type=int, default=10)
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "template_clones.json")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="yb-tpl-", dir="/tmp"))
    cloud = start_cloud(state, timeout=120)
    load_start = os.getloadavg()[0]
    try:
        tiny = state / "tiny-image" / "tiny.qcow2"
        count = args.cold + args.clones + 1
        cloud.osc("quota", "set", "--instances", str(count), "--cores", str(count), "--ram", str(count * 128),
                  "--ports", str(count + 5), "demo")
        cloud.osc("image", "create", "--file", str(tiny), "--disk-format", "qcow2",
                  "--property", "yunstack:memory_template=true", "tiny-tpl", cloud=DEMO)
        cloud.osc("network", "create", "bn", cloud=DEMO)
        cloud.osc("subnet", "create", "--network", "bn", "--subnet-range", "10.95.0.0/24", "bs", cloud=DEMO)
        userdata = state / "ud.sh"
        userdata.write_text(USER_DATA)

        cold = [boot(cloud, "tiny", f"cold-{i}", userdata) for i in range(args.cold)]
        time.sleep(args.settle)  # a measurement window, not a wait for a condition
        for guest in cold:
            guest["memory"] = memory(guest["pid"])
            guest["memory_parts"] = memory_parts(guest["pid"], RAM_MIB)
        for guest in cold:
            cloud.osc("server", "delete", "--wait", guest["id"], cloud=DEMO)

        first = boot(cloud, "tiny-tpl", "first", userdata)
        made_from = time.monotonic()
        templates = state / "instances" / ".templates"
        while not list(templates.glob("*/template.json")):
            if time.monotonic() - made_from > 600:
                raise RuntimeError("no template made within 600 s")
            time.sleep(0.2)
        (meta,) = templates.glob("*/template.json")
        template = json.loads(meta.read_text())

        clones = [boot(cloud, "tiny-tpl", f"clone-{i}", userdata) for i in range(args.clones)]
        time.sleep(args.settle)
        for guest in clones:
            guest["memory"] = memory(guest["pid"])
            guest["memory_parts"] = memory_parts(guest["pid"], RAM_MIB)
        one_guest = statistics.median([g["memory"]["rss"] for g in cold])
        clones_pss = sum(g["memory"]["pss"] for g in clones)
        identity_ok = all(g["resumed"] and g["hostname"] == g["name"] and g["api_ip"] == [g["ip"]]
                          and g["lease_ip"] == g["ip"] and g["mac"] == g["api_mac"] for g in clones)
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "kvm": os.path.exists("/dev/kvm")},
            "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()[0],
            "flavor": "m1.nano (128 MiB, 1 vCPU)",
            "template": {"build_seconds": template.get("build_seconds"), "key": template.get("key")},
            "cold_ready_ms": stats([g["ready_ms"] for g in cold] + [first["ready_ms"]]),
            "clone_ready_ms": stats([g["ready_ms"] for g in clones]),
            # Sighted by polling after READY, so an upper bound: the DHCP lease confirming each address.
            "clone_lease_ms": stats([g["lease_ms"] for g in clones if g["lease_ms"] is not None] or [0]),
            "clones_each_own_identity": identity_ok,
            "distinct": {"hostnames": len({g["hostname"] for g in clones}), "ips": len({g["ip"] for g in clones}),
                         "macs": len({g["mac"] for g in clones})},
            "one_guest_rss_mib": round(one_guest / 2**20, 1),
            "clones_pss_mib": round(clones_pss / 2**20, 1),
            "clones_pss_over_one_guest_rss": round(clones_pss / one_guest, 2),
            "clone_private_mib_each": [round(g["memory"]["private"] / 2**20, 1) for g in clones],
            # Where the clones' PSS is: the guest RAM they share (or dirtied), TCG's translation
            # buffers (one per QEMU; KVM has none) and the rest of each QEMU.
            "clones_pss_mib_by_part": {part: round(sum(g["memory_parts"][part]["pss"] for g in clones) / 2**20, 1)
                                       for part in ("guest_ram", "tcg", "qemu")},
            "one_guest_pss_mib_by_part": {
                part: round(statistics.median(g["memory_parts"][part]["pss"] for g in cold) / 2**20, 1)
                for part in ("guest_ram", "tcg", "qemu")},
            "clone_phases_ms_p50": {marker: statistics.median(g["phases_ms"][marker] for g in clones)
                                    for marker in PHASES if all(marker in g["phases_ms"] for g in clones)},
            "cold": cold, "first": first, "clones": clones,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("cold", "clones", "first")}, indent=1))
    finally:
        for server in cloud.osc_json("server", "list", cloud=DEMO) if cloud.proc.poll() is None else []:
            cloud.osc("server", "delete", "--wait", server["ID"], cloud=DEMO, check=False)
        cloud.osc("subnet", "delete", "bs", cloud=DEMO, check=False)
        cloud.osc("network", "delete", "bn", cloud=DEMO, check=False)
        cloud.stop()
        shutil.copyfile(cloud.log, args.out.with_suffix(".log"))  # the driver's timings of each clone
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
