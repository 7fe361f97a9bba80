"""The all-in-one cloud's own compute host: a supervised `yun agent` subprocess over ``/agent/v1``.

`yun up` makes a join token for its host at every start and runs ``yun agent`` with it (in the
environment, not in argv), so its host is joined exactly like any other: one protocol, one path.
The subprocess dies with the control plane (``PR_SET_PDEATHSIG``: a kill -9 of `yun up` takes its
agent along, as when both were one process; guests outlive both by design), and is restarted if it
exits on its own while the control plane serves.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from yunstack.compute.agentlink import system_context
from yunstack.config import Config
from yunstack.wiring import Services

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 30.0
RESTART_DELAY = 1.0


def _die_with_parent() -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return arm


class HostAgentProcess:
    def __init__(self, config: Config, services: Services, *, config_file: Path | None = None) -> None:
        self.config = config
        self.services = services
        self.config_file = config_file
        self.host = config.host_name
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-c", "from yunstack.cli.main import main; main()", "agent",
                "--control", self.config.server.base_url, "--state-dir", str(self.config.server.state_path)]
        if self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        return argv

    def _spawn(self) -> subprocess.Popen[bytes]:
        token = self.services.hostauth.add_host(system_context(""), self.host).token
        env = {**os.environ, "YUN_JOIN_TOKEN": token, "YUN_COMPUTE_HOST": self.host}
        return subprocess.Popen(self.argv(), env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())

    def start(self) -> None:
        with self._lock:
            self._proc = self._spawn()
        log.info("host agent %s started (pid %d)", self.host, self._proc.pid)
        self._watcher = threading.Thread(target=self._watch, name="host-agent-watch", daemon=True)
        self._watcher.start()

    def wait_connected(self, timeout: float) -> bool:
        """True once the agent long-polls (it is ready: guests adopted, first heartbeat sent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self.services.compute.hub.connected(self.host):
                return True
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("host agent %s exited with %s; restarting it", self.host, code)
            if self._stopping.wait(RESTART_DELAY):
                return
            with self._lock:
                if not self._stopping.is_set():
                    self._proc = self._spawn()

    def stop(self) -> None:
        """SIGTERM, then wait for a clean stop (it releases unused host networking); SIGKILL if stuck."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("host agent %s did not stop in %.0f s; killing it", self.host, STOP_TIMEOUT)
            proc.kill()
            proc.wait()
