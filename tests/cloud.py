"""A real `yun up` in a subprocess, and the real `openstack` CLI against it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from yunstack.network.dataplane.naming import Names

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningCloud:
    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def env(self) -> dict[str, str]:
        return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)}

    def osc(self, *args: str, cloud: str = "yunstack", check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `openstack --os-cloud CLOUD ARGS...`; ``-f json`` output is easy to parse."""
        cmd = [str(BIN / "openstack"), "--os-cloud", cloud, *args]
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}\n{done.stdout}")
        return done

    def osc_json(self, *args: str, cloud: str = "yunstack") -> Any:
        return json.loads(self.osc(*args, "-f", "json", cloud=cloud).stdout)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_cloud(state_dir: Path, port: int | None = None, *, env: dict[str, str] | None = None,
                timeout: float = 60, args: Sequence[str] = ()) -> RunningCloud:
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"yun-up-{port}.log"
    # Tests start several clouds at once: only a test that asks for it gets the host-only external
    # network (172.24.4.1/24 on a host bridge), which two clouds cannot both own.
    defaults = {"YUN_NETWORK_PUBLIC_NETWORK": ""}
    proc = subprocess.Popen(
        [str(BIN / "yun"), "up", "--port", str(port), "--state-dir", str(state_dir), *args],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **defaults, **(env or {})},
        start_new_session=True,
    )
    cloud = RunningCloud(state_dir=state_dir, port=port, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"yun up exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{cloud.url}/healthz", timeout=1).status_code == 200 and cloud.clouds_yaml.exists():
                return cloud
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    cloud.stop()
    raise AssertionError(f"yun up did not answer within {timeout}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def serving_cloud(state_dir: Path, timeout: float = 120, *, env: dict[str, str] | None = None,
                  args: Sequence[str] = ()) -> Iterator[RunningCloud]:
    """A ``yun up`` for a test module: afterwards every server is unlocked and deleted, and the
    cloud must stop cleanly."""
    running = start_cloud(state_dir, timeout=timeout, env=env, args=args)
    try:
        yield running
    finally:
        servers = running.osc_json("server", "list", "--all-projects") if running.proc.poll() is None else []
        for s in servers:
            running.osc("server", "unlock", s["ID"], check=False)
            running.osc("server", "delete", "--wait", s["ID"], check=False)
        assert running.stop() == 0, running.log.read_text()[-3000:]


def names_rule(names: Names, rule: str) -> bool:
    """Whether an iptables-save line names one of this installation's chains or links.

    Whole words only: "ysde" is inside "physdev", so a substring test would count another
    installation's bridged FORWARD rule as this one's.
    """
    return any(w.strip('"').startswith((names.chainprefix, names.ifprefix)) for w in rule.split())
