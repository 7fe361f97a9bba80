"""The composition root: builds every service from the Config once, for the API, the agent and tests."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute.agentlink import LocalControlPlane
from yunstack.compute.balancer import BalancerService
from yunstack.compute.flavors import FlavorService
from yunstack.compute.hostauth import HostAuthService, KnownCredentials
from yunstack.compute.hosts import HostService
from yunstack.compute.keypairs import KeyPairService
from yunstack.compute.memoryledger import MemoryLedgerService
from yunstack.compute.migrations import MigrationService
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
from yunstack.memory.balancer import DEFAULT_TUNING
from yunstack.memory.model import MIB
from yunstack.network.service import NetworkService
from yunstack.tasks.service import TaskService
from yunstack.volume.service import VolumeService


@dataclass(frozen=True, kw_only=True)
class Services:
    config: Config
    engine: Engine
    statements: Engine  # autocommit: the hot single statements of the agent protocol (db.engine)
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
    migrations: MigrationService
    memory: MemoryLedgerService
    balancer: BalancerService  # the cluster memory balancer ([compute] memory_balancer)
    network: NetworkService
    tasks: TaskService
    volume: VolumeService
    hostauth: HostAuthService
    host_link: LocalControlPlane  # the control plane's side of the agent protocol (local and /agent/v1)

    def close(self) -> None:
        self.network.changes.close()  # tells what was committed, before the pool goes
        self.engine.dispose()
        self.statements.dispose()


def build(config: Config, *, migrate: bool = True) -> Services:
    state = config.server.state_path
    state.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url, echo=config.database.echo)
    if migrate:
        upgrade(engine)
    db = session_factory(engine)
    statements = make_engine(config.database_url, echo=config.database.echo, autocommit=True)
    keys = KeyRepository(state / "fernet-keys", config.identity.max_active_keys)
    keys.setup()
    hasher = Hasher(config.identity)
    auth = AuthService(db, config.identity, TokenCodec(keys), hasher)
    identity = IdentityService(db, auth, hasher)
    image = ImageService(db, config.image, LocalImageStore(config.image_store), qemu_img=config.qemu.qemu_img)
    quotas = QuotaService(db)
    flavors, keypairs = FlavorService(db), KeyPairService(db, quotas)
    known = KnownCredentials()  # shared: a revoke by either service is seen by the agent API at once
    hosts = HostService(db, control_host=config.host_name, down_after=config.compute.host_down_after,
                        known=known, statements=statements)
    network = NetworkService(db, config.network, control_host=config.host_name)
    compute = ComputeService(db, config, flavors=flavors, keypairs=keypairs, quotas=quotas, hosts=hosts,
                             images=image, network=network)
    network.server_project = compute.server_project
    network.changes.notify = compute.hub.network_changed
    memory = MemoryLedgerService(db)
    tasks = TaskService(db, statements=statements)
    volume = VolumeService(db, config, images=image, wake=compute.hub.wake, tasks=tasks)
    volume.extend_attached = compute.extend_attached_volume
    volume.boot_volume_done = compute.boot_volume_done
    volume.guests_stopped = compute.guests_stopped
    volume.volume_exported = compute.volume_exported
    volume.volume_export_failed = compute.volume_export_failed
    compute.volumes = volume
    if migrate:
        volume.ensure_defaults()
    link = LocalControlPlane(db, config, hosts, image, memory, network, hub=compute.hub, tasks=tasks,
                             creating=compute.creating, volumes=volume)
    return Services(config=config, engine=engine, statements=statements, db=db, keys=keys, auth=auth, identity=identity,
                    image=image, flavors=flavors, keypairs=keypairs, quotas=quotas, hosts=hosts,
                    compute=compute, migrations=MigrationService(db, compute.hub.wake), memory=memory,
                    network=network, volume=volume, hostauth=HostAuthService(db, known=known, volumes=volume),
                    host_link=link, tasks=tasks,
                    balancer=BalancerService(
                        db, hosts, compute, mode=config.compute.memory_balancer,
                        tuning=replace(DEFAULT_TUNING,
                                       target_fraction=config.compute.memory_balancer_target_percent / 100,
                                       min_benefit_bytes=config.compute.memory_balancer_min_benefit_mib * MIB)))
