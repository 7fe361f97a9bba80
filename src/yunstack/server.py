"""`yun up`: bootstrap on first start, write clouds.yaml, then serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from yunstack import heap
from yunstack.agentproc import HostAgentProcess
from yunstack.api.app import CATALOG, configure_logging, create_app
from yunstack.config import Config
from yunstack.errors import YunError
from yunstack.wiring import Services, build

log = logging.getLogger(__name__)
AGENT_START_TIMEOUT = 120.0
HEAP_TRIM_SECONDS = 300.0
TASK_SWEEP_SECONDS = 5.0  # how often steps whose lease ran out are taken back
TASK_RETENTION = timedelta(days=7)  # ended tasks kept for the operations view (Nova's actions keep the rest)
# How long an idle keep-alive connection stays open.  Clients poll on one: openstackclient's
# `--wait` every 5 s, which is exactly uvicorn's default, so the server closed the connection just
# as the next poll went out on it and the client failed with "Connection reset by peer" (seen in
# CI).  An idle connection costs little; nginx keeps them 75 s.
KEEP_ALIVE_SECONDS = 75


@dataclass(frozen=True, kw_only=True)
class Prepared:
    services: Services
    clouds_yaml: Path
    first_start: bool


def _credentials(state: Path, made: dict[str, str | None]) -> dict[str, str]:
    """Passwords generated on the first start, kept (0600) so later starts can rewrite clouds.yaml."""
    path = state / "credentials.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for user, password in made.items():
        if password is not None:
            known[user] = password
            changed = True
    if changed or not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh, indent=2)
    return known


def write_clouds_yaml(config: Config, passwords: dict[str, str]) -> Path:
    auth_url = f"{config.server.base_url}/identity/v3"
    clouds = {}
    for cloud, user in (("yunstack", "admin"), ("yunstack-demo", "demo")):
        if user not in passwords:
            continue
        clouds[cloud] = {
            "auth": {"auth_url": auth_url, "username": user, "password": passwords[user],
                     "project_name": user, "user_domain_name": "Default",
                     "project_domain_name": "Default"},
            "region_name": config.identity.region,
            "identity_api_version": 3,
            "interface": "public",
        }
    path = config.server.state_path / "clouds.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump({"clouds": clouds}, fh, sort_keys=False)
    return path


def _ensure_tiny_image(services: Services, admin_project_id: str) -> None:
    """Build the tiny guest image once and upload it as the public image ``tiny``."""
    from yunstack.identity.context import system_context
    from yunstack.image.models import ImageFilters
    from yunstack.image.tiny import build_tiny_image

    ctx = system_context(admin_project_id)
    existing = services.image.list_images(ctx, ImageFilters(name=("tiny",)), limit=5).images
    if any(i.status == "active" for i in existing):
        return
    try:
        path = build_tiny_image(services.config.server.state_path / "tiny-image")
    except YunError as exc:
        log.warning("the tiny image could not be built, so there is no 'tiny' image: %s", exc.text)
        return
    for stale in existing:
        services.image.delete(ctx, stale.id)
    image = services.image.create(ctx, name="tiny", disk_format="qcow2", container_format="bare",
                                  visibility="public", min_ram=96,
                                  properties={"os_distro": "yunstack-tiny", "hw_rng_model": "virtio"})
    services.image.upload_local(ctx, image.id, path)
    log.info("uploaded the tiny image %s from %s", image.id, path)


def prepare(config: Config) -> Prepared:
    """Migrate, bootstrap and write clouds.yaml; safe to run on every start."""
    services = build(config)
    result = services.identity.bootstrap(base_url=config.server.base_url, region=config.identity.region,
                                         services=CATALOG, admin_password=config.identity.admin_password)
    services.flavors.ensure_defaults()
    # A migration the last run left in the middle goes on (its step is queued) or is ended here.
    services.migrations.reconcile()
    services.network.ensure_public_network(services.network.config, project_id=result.admin_project_id)
    if config.image.bootstrap_tiny:
        _ensure_tiny_image(services, result.admin_project_id)
    passwords = _credentials(config.server.state_path,
                             {"admin": result.admin_password, "demo": result.demo_password})
    path = write_clouds_yaml(config, passwords)
    return Prepared(services=services, clouds_yaml=path, first_start=result.admin_password is not None)


async def _sweep_tasks(services: Services) -> None:
    """The task table's timer: leases that ran out, then (hourly) ended tasks past their retention.

    The first sweep waits one lease: agents that outlived a stopped control plane renew what they
    still run with their first wait, before anything of theirs could count as abandoned.
    """
    lease = services.config.compute.task_lease_seconds
    await asyncio.sleep(lease)
    last_purge = 0.0
    while True:
        try:
            await asyncio.to_thread(services.host_link.sweep)
            if time.monotonic() - last_purge >= 3600:
                await asyncio.to_thread(services.tasks.purge, datetime.now(UTC) - TASK_RETENTION)
                last_purge = time.monotonic()
        except Exception:
            log.exception("the task sweep failed; trying again")
        await asyncio.sleep(TASK_SWEEP_SECONDS)


async def _balance_memory(services: Services) -> None:
    """The memory balancer's periodic pass: hosts in mode ``auto`` get their planned moves applied.

    The first pass waits one interval: the hosts' memory managers report within it after a start.
    """
    interval = services.config.compute.memory_balancer_interval
    while True:
        await asyncio.sleep(interval)
        try:
            for done in await asyncio.to_thread(services.balancer.auto_pass, f"req-{uuid.uuid4()}"):
                log.info("memory balancer: %s %s to %s%s", done.result, done.server_id, done.target,
                         f" ({done.why})" if done.why else "")
        except Exception:
            log.exception("the memory balancer's pass failed; trying again in %.0f s", interval)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def http_config(app: Callable[..., Any], config: Config) -> uvicorn.Config:
    """The API's HTTP server: one port, every service under its path prefix."""
    return uvicorn.Config(app, host=config.server.host, port=config.server.port, log_config=None, access_log=False,
                          lifespan="on", timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE_SECONDS)


def serve(config: Config, prepared: Prepared, on_ready: Callable[[], None] | None = None, *,
          config_file: Path | None = None, lab_hosts: int = 0, lab_memory_mib: int = 0) -> None:
    """Serve in the foreground; returns after a clean shutdown on SIGINT/SIGTERM.

    This host's agent is a `yun agent` subprocess that joins over ``/agent/v1`` once the API
    listens (adopting guests that outlived the last run); it stops before the API does, so that it
    can still release what it owns; guests keep running after the control plane stops, by design.

    With ``lab_hosts`` N (``yun up --hosts N``), N lab hosts (``yunstack.lab.cluster``) join too,
    over the lab underlay, whose gateway address the API also listens on; this host's agent is
    then the network host only (DHCP, routers, floating IPs, metadata; no hypervisor), with the
    gateway as its VXLAN endpoint.  Stopping removes everything of the lab, its guests included.
    """
    from yunstack.lab.cluster import LabCluster

    state = config.server.state_path
    runtime = state / "runtime.json"
    lab = (LabCluster(config, prepared.services, lab_hosts, config_file=config_file, memory_mib=lab_memory_mib)
           if lab_hosts else None)
    own_env = {} if lab is None else {"YUN_COMPUTE_ENABLED": "false", "YUN_NETWORK_TUNNEL_IP": lab.gateway_ip}
    app = create_app(prepared.services)
    app.fastapi.state.own_host = config.host_name  # /healthz says "starting" until it has joined
    agent = HostAgentProcess(config, prepared.services, config_file=config_file, env=own_env)
    server = uvicorn.Server(http_config(app, config))
    original_startup, original_shutdown = server.startup, server.shutdown
    trimming: list[asyncio.Task[None]] = []

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets=sockets)  # type: ignore[arg-type]
        if not server.started:
            return
        agent.start()
        if lab is not None:
            lab.start()
        runtime.write_text(json.dumps({"pid": os.getpid(), "url": config.server.base_url,
                                       "clouds_yaml": str(prepared.clouds_yaml)}))
        # Waiting in a thread keeps this loop serving the agents' own joins and first calls.
        if not await asyncio.to_thread(agent.wait_connected, AGENT_START_TIMEOUT):
            log.error("the host agent of %s did not join within %.0f s", config.host_name, AGENT_START_TIMEOUT)
            return
        missing = [] if lab is None else await asyncio.to_thread(lab.wait_connected, AGENT_START_TIMEOUT)
        if missing:
            log.error("lab hosts %s did not join within %.0f s", ", ".join(missing), AGENT_START_TIMEOUT)
        elif on_ready is not None:
            on_ready()
        # Start-up garbage is gone by now: hand its pages back (docs/explanation/footprint.md).
        heap.trim()
        trimming.append(asyncio.get_running_loop().create_task(heap.trim_every(HEAP_TRIM_SECONDS)))
        trimming.append(asyncio.get_running_loop().create_task(_sweep_tasks(prepared.services)))
        if config.compute.memory_balancer_interval > 0:
            trimming.append(asyncio.get_running_loop().create_task(_balance_memory(prepared.services)))

    async def shutdown(sockets: object = None) -> None:
        # The agents first, while the API still answers them (they read the network state to release it).
        if lab is not None:
            await asyncio.to_thread(lab.stop)
        await asyncio.to_thread(agent.stop)
        for task in trimming:
            task.cancel()
        prepared.services.compute.hub.close()
        await original_shutdown(sockets=sockets)  # type: ignore[arg-type]

    server.startup = startup  # type: ignore[method-assign]
    server.shutdown = shutdown  # type: ignore[method-assign]

    def stopped(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, then re-raises the signal with the
    # handlers found at start; these make that last step a clean exit instead of death by signal.
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    sockets: list[socket.socket] | None = None
    try:
        if lab is not None:
            lab.create()
            # The lab agents reach the API at the gateway: listen there too (unless on every address).
            sockets = [_listen(config.server.host, config.server.port)]
            if config.server.host not in ("0.0.0.0", "::"):
                sockets.append(_listen(lab.gateway_ip, config.server.port))
        server.run(sockets=sockets)
    finally:
        runtime.unlink(missing_ok=True)
        if lab is not None:
            lab.stop()
        agent.stop()
        for sock in sockets or []:
            sock.close()
        prepared.services.close()
        log.info("yunstack stopped")


def up(config: Config, on_ready: Callable[[Prepared], None] | None = None, *,
       config_file: Path | None = None, lab_hosts: int = 0, lab_memory_mib: int = 0) -> None:
    configure_logging(config.log.level)
    prepared = prepare(config)
    serve(config, prepared, (lambda: on_ready(prepared)) if on_ready else None, config_file=config_file,
          lab_hosts=lab_hosts, lab_memory_mib=lab_memory_mib)
