"""Leave nothing behind after an interop run: servers, QEMU, the dataplane of the run's state dir.

    python -m tests.interop.cleanup --clouds STATE/clouds.yaml --state-dir STATE --phase api|host

``api`` (while `yun up` still serves): delete every server of every project and wait for them to
go, so the agent stops their QEMU and unplugs their ports. ``host`` (after `yun up` stopped): stop
any QEMU still running from this state dir (by pid, found by the state dir in its command line)
and remove this installation's host networking (bridges, namespaces, dnsmasq, chains).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path


def delete_servers(clouds: Path, timeout: float = 180) -> int:
    import openstack

    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    conn = openstack.connect(cloud="yunstack")
    servers = list(conn.compute.servers(all_projects=True))
    for s in servers:
        conn.compute.delete_server(s, ignore_missing=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and list(conn.compute.servers(all_projects=True)):
        time.sleep(1)
    for fip in conn.network.ips():
        conn.network.delete_ip(fip, ignore_missing=True)
    return len(servers)


def qemu_pids(state_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{state_dir}/"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def stop_host(state_dir: Path) -> None:
    for pid in qemu_pids(state_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    from yunstack.network.dataplane.linux import LinuxDataplane

    asyncio.run(LinuxDataplane(state_dir, metadata_upstream="http://127.0.0.1:9").teardown())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--clouds", type=Path)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--phase", choices=("api", "host"), required=True)
    args = p.parse_args(argv)
    if args.phase == "api":
        print(f"deleted {delete_servers(args.clouds)} servers")
    else:
        stop_host(args.state_dir.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
