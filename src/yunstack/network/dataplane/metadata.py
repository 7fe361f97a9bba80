"""Starting and stopping metadata proxies (one per router namespace or isolated network).

Each proxy has a work directory in the state dir holding its pid file, its command line and its
log.  A proxy whose command line would change (networks added to a router, a new upstream) is
restarted; one that died is started again on the next ``apply``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from yunstack.errors import DriverError
from yunstack.network.dataplane import _proc

MODULE = "yunstack.network.dataplane.metadata_proxy"


def argv(*, netns: str, networks: Mapping[str, str], upstream: str, secret_file: Path,
         pidfile: Path, python: str = sys.executable) -> list[str]:
    out = [python, "-m", MODULE, "--netns", netns, "--upstream", upstream,
           "--secret-file", str(secret_file), "--state-marker", str(pidfile)]
    for cidr, network_id in sorted(networks.items()):
        out += ["--network", f"{cidr}={network_id}"]
    return out


def ensure(workdir: Path, command: list[str]) -> str:
    """Start or restart the proxy of ``workdir``; returns what it did ('' if nothing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pidfile = workdir / "proxy.pid"
    marker = str(pidfile)
    argv_file = workdir / "argv.json"
    recorded = json.loads(argv_file.read_text()) if argv_file.exists() else None
    pid = _proc.running(pidfile, marker)
    if pid is not None and recorded == command:
        return ""
    what = "restarted" if pid is not None else "started"
    _proc.stop(pidfile, marker)
    argv_file.write_text(json.dumps(command))
    log = workdir / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise DriverError(detail=f"metadata proxy exited with {proc.returncode}: {tail}")
        if "serving " in log.read_text(errors="replace")[-4000:]:
            return what
        time.sleep(0.02)
    return what


def stop(workdir: Path) -> bool:
    pidfile = workdir / "proxy.pid"
    return _proc.stop(pidfile, str(pidfile))
