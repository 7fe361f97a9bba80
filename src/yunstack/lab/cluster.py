"""`yun up --hosts N`: N compute hosts on this one machine, each a `yun agent` in its own namespace.

Each lab host is a network namespace on the lab underlay (``yunstack.lab.underlay``:
``10.250.K.0/24``, the control host at ``.1`` on the bridge), with its own host name (``lab-hI``),
state directory (``STATE/lab/hI``: instances, image cache, credential), memory budget (its own
parent cgroup, limited to ``memory_mib``) and VXLAN endpoint (its underlay address).  Its agent
joins with a one-time token over the same ``/agent/v1`` protocol a real host uses, reaching the
control plane at the gateway address; nothing of it opens the database.

The agents enter only the network namespace (``nsenter --net``), not the mount namespace that
``ip netns exec`` makes: that one remounts /sys, which hides the cgroup tree the memory budget
lives in.  The dataplane reads and writes only /proc/sys, which follows the network namespace.

``stop`` undoes everything: the agents (SIGTERM, as any host), then the guests still running in a
host's namespace (a lab host's guests go with the lab), their cgroups, the namespaces, veths and
bridge, and the state directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from yunstack import cgroups
from yunstack.agentproc import HostAgentProcess
from yunstack.config import Config
from yunstack.errors import BadRequest
from yunstack.lab.underlay import LabHost, Underlay
from yunstack.network.dataplane.naming import install_tag
from yunstack.wiring import Services

log = logging.getLogger(__name__)
MAX_HOSTS = 16
KILL_TIMEOUT = 10.0


def budget_cgroup(tag: str, host: str) -> str:
    """The memory cgroup that is lab host ``host``'s budget (``h1``...; its guests' cgroups are its
    children): what a benchmark reads for the host's usage and OOM kills."""
    return f"yunstack-lab-{tag}-{host}"


def lab_cidr(state_dir: Path) -> str:
    """The lab's underlay range: 10.250.K.0/24 with K from the state directory (labs of two
    installations on one machine do not collide; ``Underlay`` refuses a range the host already uses)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).digest()
    return f"10.250.{100 + digest[0] % 150}.0/24"


class LabCluster:
    """``count`` lab hosts of the cloud ``config`` describes, served on ``port`` at the gateway."""

    def __init__(self, config: Config, services: Services, count: int, *, config_file: Path | None = None,
                 memory_mib: int = 0, cidr: str | None = None) -> None:
        if not 1 <= count <= MAX_HOSTS:
            raise BadRequest("--hosts {count}: from 1 to {most}.", count=count, most=MAX_HOSTS)
        state = config.server.state_path
        self.config, self.services, self.count, self.config_file = config, services, count, config_file
        self.tag = install_tag(state)
        self.underlay = Underlay(self.tag, cidr or lab_cidr(state), mtu=config.network.underlay_mtu)
        self.root = state / "lab"
        self.memory_mib = memory_mib
        self.hosts: list[LabHost] = []
        self.agents: list[HostAgentProcess] = []

    @property
    def gateway_ip(self) -> str:
        return self.underlay.gateway_ip

    @property
    def control_url(self) -> str:
        """Where lab agents reach the control plane: its port on the underlay's gateway address."""
        return f"http://{self.gateway_ip}:{self.config.server.port}"

    def host_name(self, host: LabHost) -> str:
        return f"lab-{host.name}"

    def cgroup_parent(self, host: LabHost) -> str:
        return budget_cgroup(self.tag, host.name)

    def create(self) -> None:
        """The underlay (before the API listens: it binds the gateway address too)."""
        self._clear_leftovers()
        self.hosts = self.underlay.create(self.count)
        log.info("lab underlay %s: %s on %s, hosts %s", self.underlay.network, self.underlay.bridge,
                 self.gateway_ip, ", ".join(f"{self.host_name(h)}={h.ip}" for h in self.hosts))

    def start(self) -> None:
        """One agent per lab host (the API answers by now: each joins at once)."""
        for host in self.hosts:
            directory = self.root / host.name
            directory.mkdir(parents=True, exist_ok=True)
            env = {
                "YUN_NETWORK_TUNNEL_IP": host.ip,
                "YUN_COMPUTE_ENABLED": "true",
                "YUN_MEMORY_CGROUP_PARENT": self.cgroup_parent(host),
                "YUN_MEMORY_BUDGET_BYTES": str(self.memory_mib * 1024 * 1024),
                # KSM and swap are the machine's, not a host's: the lab hosts leave them alone.
                "YUN_MEMORY_KSM_MODE": "never",
                "YUN_MEMORY_SWAPFILE_BYTES": "0",
            }
            agent = HostAgentProcess(self.config, self.services, config_file=self.config_file,
                                     host=self.host_name(host), control=self.control_url, state_dir=directory,
                                     wrap=["nsenter", f"--net=/run/netns/{host.netns}", "--"], env=env,
                                     restart=False)
            agent.start()
            self.agents.append(agent)

    def wait_connected(self, timeout: float) -> list[str]:
        """The lab hosts that did not join within ``timeout`` (empty: all serve)."""
        deadline = time.monotonic() + timeout
        return [a.host for a in self.agents if not a.wait_connected(max(0.1, deadline - time.monotonic()))]

    def stop(self) -> None:
        """Stop every agent, then remove their guests, cgroups, namespaces, links and directories."""
        for agent in self.agents:
            agent.stop()
        self.agents = []
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """Whatever a lab of this installation left (this run's, or a killed earlier run's)."""
        for netns in sorted(self.underlay.namespaces()):
            _kill_namespace_processes(netns)
        groups = cgroups.detect()
        if groups is not None:
            for i in range(1, MAX_HOSTS + 1):
                with contextlib.suppress(OSError, ValueError):
                    groups.remove_if_unused(self.cgroup_parent(self.underlay.host(i)))
        self.underlay.remove()
        shutil.rmtree(self.root, ignore_errors=True)


def _namespace_pids(netns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _kill_namespace_processes(netns: str) -> None:
    """SIGTERM, then SIGKILL, every process in ``netns`` (guests of a lab host, its agent if stuck)."""
    pids = _namespace_pids(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_TIMEOUT
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = _namespace_pids(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_TIMEOUT
    while _namespace_pids(netns) and time.monotonic() < deadline:
        time.sleep(0.1)
