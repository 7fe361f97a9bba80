"""The composition root: builds every service from the Config once, for the API, the agent and tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from yunstack.agent.agent import Agent
from yunstack.compute.agentlink import LocalControlPlane
from yunstack.compute.driver import ComputeDriver
from yunstack.compute.drivers import make_driver
from yunstack.compute.flavors import FlavorService
from yunstack.compute.hosts import HostService
from yunstack.compute.keypairs import KeyPairService
from yunstack.compute.memoryledger import MemoryLedgerService
from yunstack.compute.quotas import QuotaService
from yunstack.compute.service import ComputeService
from yunstack.config import Config
from yunstack.db.engine import make_engine, session_factory, upgrade
from yunstack.identity.auth import AuthService
from yunstack.identity.passwords import Hasher
from yunstack.identity.service import IdentityService
from yunstack.identity.tokens import KeyRepository, TokenCodec
from yunstack.image.service import ImageService
from yunstack.image.store import LocalImageStore
from yunstack.memory.manager import MemoryManager
from yunstack.network.dataplane.base import Dataplane
from yunstack.network.dataplane.fake import FakeDataplane
from yunstack.network.dataplane.linux import LinuxDataplane
from yunstack.network.service import NetworkService


@dataclass(frozen=True, kw_only=True)
class Services:
    config: Config
    engine: Engine
    db: sessionmaker[Session]
    keys: KeyRepository
    auth: AuthService
    identity: IdentityService
    image: ImageService
    flavors: FlavorService
    keypairs: KeyPairService
    quotas: QuotaService
    hosts: HostService
    compute: ComputeService
    memory: MemoryLedgerService
    network: NetworkService

    def close(self) -> None:
        self.engine.dispose()


def build(config: Config, *, migrate: bool = True) -> Services:
    state = config.server.state_path
    state.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url, echo=config.database.echo)
    if migrate:
        upgrade(engine)
    db = session_factory(engine)
    keys = KeyRepository(state / "fernet-keys", config.identity.max_active_keys)
    keys.setup()
    hasher = Hasher(config.identity)
    auth = AuthService(db, config.identity, TokenCodec(keys), hasher)
    identity = IdentityService(db, auth, hasher)
    image = ImageService(db, config.image, LocalImageStore(config.image_store), qemu_img=config.qemu.qemu_img)
    quotas = QuotaService(db)
    flavors, keypairs = FlavorService(db), KeyPairService(db, quotas)
    hosts = HostService(db, control_host=config.host_name)
    network = NetworkService(db, config.network, control_host=config.host_name)
    compute = ComputeService(db, config, flavors=flavors, keypairs=keypairs, quotas=quotas, hosts=hosts,
                             images=image, network=network)
    network.server_project = compute.server_project
    return Services(config=config, engine=engine, db=db, keys=keys, auth=auth, identity=identity,
                    image=image, flavors=flavors, keypairs=keypairs, quotas=quotas, hosts=hosts,
                    compute=compute, memory=MemoryLedgerService(db), network=network)


def make_dataplane(config: Config) -> Dataplane:
    """The host dataplane; the fake one whenever no real guest runs (fake compute driver)."""
    if config.network.dataplane == "fake" or config.compute.driver == "fake":
        return FakeDataplane()
    return LinuxDataplane(config.server.state_path, metadata_upstream=f"{config.server.base_url}/metadata",
                          dns_domain=config.network.dns_domain, tag=config.network.install_tag or None)


def build_agent(services: Services, driver: ComputeDriver | None = None,
                dataplane: Dataplane | None = None) -> Agent:
    """This host's agent, registered with the compute service so that new work wakes it at once."""
    config = services.config
    link = LocalControlPlane(services.db, config, services.hosts, services.image, services.memory,
                             services.network)
    driver = driver or make_driver(config)
    memory = None
    if config.memory.enabled:
        real = config.compute.driver == "qemu"
        # With the fake driver nothing real runs: never touch the host's KSM, cgroups or swap.
        memory_config = config.memory if real else replace(config.memory, ksm_mode="never", cgroup_parent="",
                                                            swapfile_bytes=0, budget_bytes=0)
        memory = MemoryManager(driver, memory_config, state_dir=config.server.state_path, detect_cgroups=real)
    agent = Agent(config.host_name, driver, link, image_cache=config.image_cache_path,
                  poll_interval=config.compute.poll_interval, stop_timeout=config.qemu.stop_timeout,
                  memory=memory, dataplane=dataplane or make_dataplane(config),
                  network_period=config.network.reconcile_period, tunnel_ip=config.network.tunnel_ip)
    services.compute.agents[agent.host] = agent
    services.compute.notify = _wake(services.compute.agents)
    return agent


def _wake(agents: dict[str, Agent]) -> Callable[[str], None]:
    def wake(host: str) -> None:
        agent = agents.get(host)
        if agent is not None:
            agent.wake()

    return wake
