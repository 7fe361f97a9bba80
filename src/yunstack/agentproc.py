"""Compute hosts that `yun up` supervises: `yun agent` subprocesses over ``/agent/v1``.

`yun up` makes a join token for each of its hosts at every start and runs ``yun agent`` with it (in
the environment, not in argv), so its hosts are joined exactly like any other: one protocol, one
path.  That is the all-in-one cloud's own host and, with ``--hosts N``, the lab hosts
(``yunstack.lab.cluster``), each started inside its network namespace through ``wrap``.

A subprocess dies with the control plane (``PR_SET_PDEATHSIG``: a kill -9 of `yun up` takes its
agents along, as when all were one process; guests outlive them by design).  The control host's
agent is restarted if it exits on its own while the control plane serves; a lab host's is not
(``restart=False``): a killed lab agent is a host that went down, which is what the lab is for.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from yunstack.config import Config
from yunstack.identity.context import system_context
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
    """One supervised ``yun agent`` for host ``host`` (default: the control host's own).

    ``control`` is the URL the agent reaches the control plane at, ``state_dir`` its own state
    directory, ``wrap`` an argv prefix (``ip netns exec NS``) and ``env`` extra ``YUN_*`` settings.
    """

    def __init__(self, config: Config, services: Services, *, config_file: Path | None = None,
                 host: str | None = None, control: str | None = None, state_dir: Path | None = None,
                 wrap: Sequence[str] = (), env: Mapping[str, str] | None = None, restart: bool = True) -> None:
        self.config = config
        self.services = services
        self.config_file = config_file
        self.host = host or config.host_name
        self.control = control or config.server.base_url
        self.state_dir = state_dir or config.server.state_path
        self.wrap = list(wrap)
        self.env = dict(env or {})
        self.restart = restart
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def argv(self) -> list[str]:
        argv = [*self.wrap, sys.executable, "-c", "from yunstack.cli.main import main; main()", "agent",
                "--control", self.control, "--state-dir", str(self.state_dir)]
        if self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        return argv

    def _spawn(self) -> subprocess.Popen[bytes]:
        token = self.services.hostauth.add_host(system_context(""), self.host).token
        env = {**os.environ, **self.env, "YUN_JOIN_TOKEN": token, "YUN_COMPUTE_HOST": self.host}
        return subprocess.Popen(self.argv(), env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())

    def start(self) -> None:
        with self._lock:
            self._proc = self._spawn()
        log.info("host agent %s started (pid %d)", self.host, self._proc.pid)
        self._watcher = threading.Thread(target=self._watch, name=f"host-agent-watch-{self.host}", daemon=True)
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
            if not self.restart:
                log.error("host agent %s exited with %s; its host is down until `yun up` restarts", self.host, code)
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
