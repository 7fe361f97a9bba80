"""One compute host: its driver, dataplane and memory manager under an agent, against a control plane.

``make_agent`` builds that from the host's Config and a link (the functional tests and benchmarks
use it with an in-process or an HTTP link); ``run`` is ``yun agent``: join with a one-time token (or
reuse the credential saved by an earlier join), then run until SIGTERM/SIGINT over HTTP.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

from yunstack.agent.agent import Agent
from yunstack.agent.http import HttpControlPlane, join, load_credential, save_credential
from yunstack.agent.link import ControlPlane
from yunstack.compute.driver import ComputeDriver
from yunstack.compute.drivers import make_driver
from yunstack.compute.fake import FakeDriver
from yunstack.config import Config
from yunstack.errors import BadRequest, YunError
from yunstack.memory.manager import MemoryManager
from yunstack.network.dataplane.base import Dataplane
from yunstack.network.dataplane.fake import FakeDataplane
from yunstack.network.dataplane.linux import LinuxDataplane
from yunstack.volume.backend import VolumeBackend
from yunstack.volume.backends.fake import FakeVolumeBackend
from yunstack.volume.backends.file import FileBackend
from yunstack.volume.backends.rbd import RbdBackend
from yunstack.volume.export import NbdExports

log = logging.getLogger(__name__)
START_RETRY_SECONDS = 2.0


def make_dataplane(config: Config, control: str | None = None) -> Dataplane:
    """The host dataplane; the fake one whenever no real guest runs (fake compute driver)."""
    if config.network.dataplane == "fake" or config.compute.driver == "fake":
        return FakeDataplane()
    upstream = f"{(control or config.server.base_url).rstrip('/')}/metadata"
    return LinuxDataplane(config.server.state_path, metadata_upstream=upstream,
                          dns_domain=config.network.dns_domain, tag=config.network.install_tag or None)


def make_agent(config: Config, link: ControlPlane, *, driver: ComputeDriver | None = None,
               dataplane: Dataplane | None = None, control: str | None = None) -> Agent:
    """The agent of host ``config.host_name`` over ``link``."""
    if not config.compute.enabled:
        # A network host only: nothing of QEMU, cgroups or KSM is touched (nor is QEMU required).
        driver = driver or FakeDriver(hostname=config.host_name)
    driver = driver or make_driver(config)
    memory = None
    if config.memory.enabled and config.compute.enabled:
        real = config.compute.driver == "qemu"
        # With the fake driver nothing real runs: never touch the host's KSM, cgroups or swap.
        memory_config = config.memory if real else replace(config.memory, ksm_mode="never", cgroup_parent="",
                                                            swapfile_bytes=0, budget_bytes=0)
        memory = MemoryManager(driver, memory_config, state_dir=config.server.state_path, detect_cgroups=real)
    volumes = make_volumes(config)
    exports = None if volumes is None else NbdExports(config.server.state_path / "exports",
                                                      config.qemu.qemu_storage_daemon)
    return Agent(config.host_name, driver, link, image_cache=config.image_cache_path, volumes=volumes, exports=exports,
                 poll_interval=config.compute.poll_interval, stop_timeout=config.qemu.stop_timeout,
                 memory=memory, dataplane=dataplane or make_dataplane(config, control),
                 network_period=config.network.reconcile_period, tunnel_ip=config.network.tunnel_ip,
                 compute=config.compute.enabled)


def make_volumes(config: Config) -> VolumeBackend | None:
    """The host's volume backend.  Every agent has one when volumes are on; only the storage host
    (``[volume] storage_host``, the control host by default) is ever given volume steps, and an
    unused backend is only a directory name."""
    v = config.volume
    if not v.enabled:
        return None
    if v.backend == "fake":
        return FakeVolumeBackend()
    if v.backend == "file":
        return FileBackend(config.volumes_path, qemu_img=config.qemu.qemu_img)
    if v.backend == "rbd":
        return RbdBackend(v.rbd_pool, namespace=v.rbd_namespace, conf=v.rbd_conf, user=v.rbd_user,
                          keyring=v.rbd_keyring, max_clone_depth=v.rbd_max_clone_depth, qemu_img=config.qemu.qemu_img)
    raise BadRequest("Unknown [volume] backend {name!r}: 'file', 'rbd' or 'fake'.", name=v.backend)


def credential(state_dir: Path, control: str, join_token: str | None) -> tuple[str, str]:
    """(host, credential): a new join when a token is given, else the one saved by the last join."""
    if join_token:
        host, secret = join(control, join_token)
        save_credential(state_dir, control, host, secret)
        log.info("joined the control plane at %s as host %s", control, host)
        return host, secret
    saved = load_credential(state_dir)
    if saved is None:
        raise BadRequest("This host has not joined yet: give --join-token (from `yun host add NAME`).")
    return saved[1], saved[2]


def run(config: Config, control: str, join_token: str | None, stop: threading.Event | None = None) -> None:
    """``yun agent``: serve one compute host until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or threading.Event()
    host, secret = credential(config.server.state_path, control, join_token)
    config = replace(config, compute=replace(config.compute, host=host))
    link = HttpControlPlane(control, host, secret)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _n, _f: stop.set())
    agent = None
    try:
        while agent is None and not stop.is_set():
            candidate = make_agent(config, link, control=control)
            try:
                candidate.start()
            except (YunError, OSError) as exc:  # the control plane is not up (yet): try again
                log.warning("host agent could not start (%s); retrying", exc)
                candidate.stop()
                stop.wait(START_RETRY_SECONDS)
                continue
            agent = candidate
        log.info("host agent %s serving %s", host, control)
        while not stop.wait(1.0):
            pass
    finally:
        if agent is not None:
            agent.stop()
        link.close()
        time.sleep(0)  # let the stopping threads log
