"""Configuration: one frozen dataclass per section, loaded once at the entrypoint.

Sources, later ones winning: in-code defaults, a TOML file (``[section] field = value``), then
environment variables ``YUN_<SECTION>_<FIELD>`` (for example ``YUN_DATABASE_URL``).  The loaded
``Config`` is passed down explicitly; nothing reads a global.  ``docs/reference/config.md`` is
generated from these classes (``yun config-doc``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from yunstack.errors import BadRequest


def _default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/yunstack"
    return str(Path.home() / ".local/share/yunstack")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The one HTTP port that serves every API and the dashboard."""

    host: str = _help("Address to listen on.", "127.0.0.1")
    port: int = _help("TCP port to listen on.", 8080)
    state_dir: str = _help("Directory for the database, keys, images and instances.", "")
    public_url: str = _help(
        "Base URL that clients use (put in the catalog); empty means http://HOST:PORT.", ""
    )
    metrics_public: bool = _help("Serve /metrics to any client, not only loopback.", False)
    max_body_bytes: int = _help(
        "Largest JSON request body accepted (image uploads are streamed and exempt).", 1 << 20
    )

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir or _default_state_dir())

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """Where the control plane keeps its state."""

    url: str = _help(
        "SQLAlchemy URL; empty means SQLite (WAL) at STATE_DIR/yunstack.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
        "",
    )
    echo: bool = _help("Log every SQL statement (debugging only).", False)


@dataclass(frozen=True, kw_only=True)
class IdentityConfig:
    """Keystone v3: tokens, passwords, bootstrap."""

    token_expiration: int = _help("Token lifetime in seconds.", 3600)
    max_active_keys: int = _help("Fernet keys kept by rotation (primary + staged + old).", 3)
    argon2_time_cost: int = _help("argon2id iterations for password hashes.", 2)
    argon2_memory_kib: int = _help("argon2id memory per hash, KiB (memory-hard on purpose).", 19456)
    argon2_parallelism: int = _help("argon2id lanes.", 1)
    auth_cache_seconds: float = _help(
        "How long a validated token's context is cached in-process; revocations clear it.", 5.0
    )
    region: str = _help("Region name in the service catalog.", "RegionOne")
    admin_password: str = _help(
        "Bootstrap admin password; empty means generate one on first start.", ""
    )


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """Glance v2: the local file store."""

    store_dir: str = _help("Where image files live; empty means STATE_DIR/images.", "")
    quota_bytes: int = _help("Image bytes a project may store (0 = unlimited).", 50 * 1024**3)
    max_image_bytes: int = _help("Largest single image accepted.", 20 * 1024**3)
    bootstrap_tiny: bool = _help(
        "Build the tiny guest image and upload it as the public image 'tiny' on first start.", True
    )


@dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """Nova v2.1, the scheduler and this host's agent."""

    driver: str = _help("Compute driver: 'qemu' (real VMs) or 'fake' (contract/scale tests only).", "qemu")
    host: str = _help("This host's name; empty means the machine's hostname.", "")
    enabled: bool = _help("Run guests on this host. False: its agent is a network host only (DHCP, routers, "
                          "floating IPs, metadata), with no hypervisor to schedule onto (`yun up --hosts N` "
                          "sets this for the control host).", True)
    availability_zone: str = _help("Availability zone of this host.", "nova")
    instances_dir: str = _help("Per-instance files; empty means STATE_DIR/instances.", "")
    image_cache_dir: str = _help("Cached base images; empty means STATE_DIR/image-cache.", "")
    ram_allocation_ratio: float = _help("Virtual to physical RAM ratio for the RAM filter.", 1.5)
    cpu_allocation_ratio: float = _help("Virtual to physical CPU ratio for the vCPU filter.", 16.0)
    disk_allocation_ratio: float = _help("Virtual to physical disk ratio for the disk filter.", 1.0)
    reserved_host_memory_mib: int = _help("Host RAM kept away from guests.", 512)
    poll_interval: float = _help("Seconds between agent passes (work, power-state sync).", 1.0)
    host_down_after: float = _help(
        "Seconds without a word from a host's agent after which the host counts as down (service state "
        "'down', skipped by the scheduler, its servers may be evacuated). Each long-poll an agent starts "
        "is that word, and the control plane ends each after at most two thirds of this. At most 30 s "
        "marks a killed agent's host down within 30 s.", 30.0)
    task_lease_seconds: float = _help(
        "How long a host holds a step it claimed without saying it still runs it (its agent says so "
        "every long-poll, at most 20 s apart). A step whose lease ran out runs again (at most 3 times), "
        "then fails with the reason; a restarted agent gets its predecessor's steps back at once.", 60.0)
    force_config_drive: bool = _help("Give every server a config drive, as Nova's force_config_drive; "
                                     "false: only servers created with config_drive true get one (the "
                                     "others read the metadata service over HTTP).", True)
    memory_balancer: str = _help(
        "The cluster memory balancer's mode (docs/explanation/memory-balancer.md): 'off' (no plan), "
        "'advise' (plans are shown, never applied) or 'auto' (`POST os-yunstack-memory-balancer/apply` "
        "live-migrates the planned servers, and so does the control plane's own pass every "
        "`memory_balancer_interval` seconds).", "advise")
    memory_balancer_target_percent: int = _help(
        "The memory balancer keeps each host's memory in use at or below this share of its memory (a host "
        "triggers 5 points above it; a target must stay 5 points below it).", 80)
    memory_balancer_min_benefit_mib: int = _help(
        "The memory balancer moves a guest only if that frees at least this much on its host (a move "
        "costs a pause or a copy: small guests are not worth it; docs/explanation/memory-balancer.md).", 256)
    memory_balancer_interval: float = _help(
        "Seconds between the control plane's memory balancer passes (they apply the moves of hosts in "
        "mode 'auto'; a host's aggregates may set its mode); 0: no periodic pass.", 30.0)


@dataclass(frozen=True, kw_only=True)
class QemuConfig:
    """The QEMU driver."""

    binary: str = _help("QEMU system emulator.", "qemu-system-x86_64")
    qemu_img: str = _help("qemu-img binary.", "qemu-img")
    qemu_nbd: str = _help("qemu-nbd binary (serves a stopped guest's disks to the host it moves to).", "qemu-nbd")
    qemu_storage_daemon: str = _help(
        "qemu-storage-daemon binary (the storage host serves a volume attached on another host over NBD).",
        "qemu-storage-daemon")
    accel: str = _help("'auto' (KVM when a bounded probe boots, else TCG), 'kvm' or 'tcg'.", "auto")
    kvm_probe_timeout: float = _help("Seconds the KVM probe may take before TCG is chosen.", 3.0)
    tcg_tb_size_mib: int = _help("TCG translation cache per VM, MiB (QEMU's default is 1 GiB).", 32)
    template_max_age_hours: float = _help(
        "A memory template older than this starts no more clones: the next server boots and a fresh "
        "one is made (every clone shares its template's memory as it was; "
        "docs/explanation/memory-templates.md). 0: no limit.", 24.0)
    machine: str = _help("Machine type.", "q35")
    stop_timeout: float = _help("Seconds a graceful ACPI power-down may take before a hard quit.", 15.0)
    disk_cache: str = _help(
        "Host caching of instance disks: 'auto' ('none', i.e. O_DIRECT, where the instance directory's "
        "file system supports it, else 'writeback'), 'none', 'writeback' or 'writethrough'. 'none' keeps "
        "guest data out of the host page cache, so it is not cached twice (as Nova does).", "auto")


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """The memory overcommit manager of a compute host (see docs/explanation/memory.md)."""

    enabled: bool = _help("Run the memory manager in the host agent.", True)
    period: float = _help("Seconds between manager passes.", 2.0)
    cgroup_parent: str = _help(
        "Memory cgroup holding one child per VM (yunstack/<instance-id>); empty disables cgroups.", "yunstack")
    budget_bytes: int = _help(
        "Host memory budget for all guests, enforced on the parent cgroup; 0 means the whole host.", 0)
    budget_swap_bytes: int = _help(
        "Swap the guests may use beyond the budget (v1 memsw / v2 swap.max); -1 unlimited.", -1)
    swapfile_bytes: int = _help(
        "Size of a swapfile yunstack creates in swap_dir and removes on shutdown; 0 means none.", 0)
    swap_dir: str = _help("Where the swapfile lives; empty means STATE_DIR/memory.", "")
    swap_priority: int = _help("swapon priority of the yunstack swapfile.", 0)
    ksm_mode: str = _help(
        "KSM control: 'auto' (policy), 'always' (run whenever a guest may share), 'never' (leave it).", "auto")
    idle_tax: float = _help("ESX idle memory tax, 0..0.99.", 0.75)
    history_seconds: float = _help("How much ledger history to keep in memory.", 1800.0)


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Networking: the dataplane, the host-only external network ``public``, tenant defaults."""

    dataplane: str = _help("Host dataplane: 'linux' (bridges, dnsmasq, iptables, namespaces) or 'fake' "
                           "(functional tests only).", "linux")
    dns_domain: str = _help("DNS domain dnsmasq serves instance names in.", "openstacklocal")
    install_tag: str = _help("Two characters that scope this installation's host objects; empty means "
                             "derived from the state dir.", "")
    reconcile_period: float = _help(
        "Seconds between full dataplane reconciliations besides those a change asks for (the "
        "control plane tells a host's agent of every change that concerns it at once).", 30.0)

    mtu: int = _help("MTU of tenant networks; 0: underlay_mtu - 50, the room VXLAN over IPv4 needs.", 0)
    underlay_mtu: int = _help("MTU of the network between the hosts (VXLAN runs over it).", 1500)
    tunnel_ip: str = _help("This host's VXLAN endpoint: its address on the underlay, reported to the control "
                           "plane; empty: no VXLAN (a single host needs none).", "")
    network_host: str = _help("The host that runs DHCP, routers, floating IPs and the metadata proxy of every "
                              "network; empty: the control host.", "")
    public_network: str = _help("Name of the admin-owned external network made at bootstrap; empty: none.", "public")
    public_subnet: str = _help("Name of its subnet.", "public-subnet")
    public_cidr: str = _help("CIDR of the host-only external bridge (DevStack uses the same range).", "172.24.4.0/24")
    public_gateway: str = _help("The host's address on the external bridge: the subnet's gateway.", "172.24.4.1")
    public_pool_start: str = _help("First address handed to router gateways and floating IPs.", "172.24.4.10")
    public_pool_end: str = _help("Last such address.", "172.24.4.250")

    @property
    def tenant_mtu(self) -> int:
        """The MTU new tenant networks get (``mtu``, or the underlay's less the VXLAN overhead)."""
        return self.mtu or self.underlay_mtu - 50


@dataclass(frozen=True, kw_only=True)
class VolumeConfig:
    """Block storage (Cinder v3): where volumes live and which host's agent keeps them."""

    enabled: bool = _help("Serve block storage (/volume/v3).", True)
    backend: str = _help("Volume backend of the storage host: 'file' (qcow2 files in the state directory), "
                         "'rbd' (Ceph RBD images in rbd_pool) or 'fake' (contract and scale tests only: keeps "
                         "no bytes).", "file")
    storage_host: str = _help("The host whose agent keeps the volumes; empty means the control host.", "")
    volumes_dir: str = _help("Where the file backend keeps volumes; empty means STATE_DIR/volumes.", "")
    rbd_pool: str = _help("The rbd backend's Ceph pool (made and `rbd pool init`-ed beforehand).", "volumes")
    rbd_namespace: str = _help("An RBD namespace in rbd_pool to keep the volumes in; empty means none.", "")
    rbd_conf: str = _help("ceph.conf of the rbd backend's cluster (mon addresses; `keyring` for rbd_user); "
                          "empty means Ceph's default, /etc/ceph/ceph.conf.", "")
    rbd_user: str = _help("Cephx id the rbd backend and QEMU connect as (without 'client.'), e.g. with "
                          "caps `mon 'profile rbd' osd 'profile rbd pool=volumes'`; empty means 'admin'.", "")
    rbd_keyring: str = _help("Keyring of rbd_user for the rbd command line; empty means the one ceph.conf names "
                             "(QEMU always finds it through ceph.conf).", "")
    rbd_max_clone_depth: int = _help("A volume cloned from a volume or snapshot whose chain of RBD clones is "
                                     "deeper than this is flattened (copied whole) once made, as Cinder's "
                                     "rbd_max_clone_depth.", 5)
    availability_zone: str = _help("Availability zone of the volumes.", "nova")
    default_volume_type: str = _help("Volume type of a volume created without one (made at bootstrap).",
                                     "__DEFAULT__")


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """Logging."""

    level: str = _help("Root log level.", "INFO")


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    qemu: QemuConfig = field(default_factory=QemuConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.server.state_path / 'yunstack.db'}"

    @property
    def image_store(self) -> Path:
        return Path(self.image.store_dir) if self.image.store_dir else self.server.state_path / "images"

    @property
    def instances_path(self) -> Path:
        c = self.compute
        return Path(c.instances_dir) if c.instances_dir else self.server.state_path / "instances"

    @property
    def image_cache_path(self) -> Path:
        c = self.compute
        return Path(c.image_cache_dir) if c.image_cache_dir else self.server.state_path / "image-cache"

    @property
    def host_name(self) -> str:
        return self.compute.host or socket.gethostname()

    @property
    def volumes_path(self) -> Path:
        v = self.volume
        return Path(v.volumes_dir) if v.volumes_dir else self.server.state_path / "volumes"

    @property
    def storage_host(self) -> str:
        """The host whose agent keeps the volumes (the control host unless configured)."""
        return self.volume.storage_host or self.host_name


def _coerce(kind: Any, raw: object, where: str) -> object:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
    elif kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            return int(raw)
    elif kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
    elif kind is str and isinstance(raw, str):
        return raw
    raise BadRequest("Config {where}: expected {kind}, got {raw!r}.", where=where, kind=kind.__name__, raw=raw)


def sections() -> dict[str, type[Any]]:
    """Section name -> dataclass, in declaration order."""
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
         **overrides: Mapping[str, object]) -> Config:
    """Build the Config from defaults, an optional TOML file, ``YUN_*`` variables and overrides.

    ``overrides`` maps a section name to field values (the CLI's flags), applied last.
    """
    env = os.environ if env is None else env
    data: dict[str, dict[str, object]] = {}
    if path is not None and Path(path).exists():
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        for name, values in raw.items():
            if name not in sections() or not isinstance(values, dict):
                raise BadRequest("Config file {path}: unknown section [{name}].", path=path, name=name)
            data.setdefault(name, {}).update(values)
    built: dict[str, object] = {}
    for name, cls in sections().items():
        hints = get_type_hints(cls)
        values = dict(data.get(name, {}))
        for f in dataclasses.fields(cls):
            key = f"YUN_{name.upper()}_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
        values.update(overrides.get(name, {}))
        unknown = set(values) - set(hints)
        if unknown:
            raise BadRequest("Config [{name}]: unknown keys {keys}.", name=name, keys=sorted(unknown))
        built[name] = cls(**{k: _coerce(hints[k], v, f"{name}.{k}") for k, v in values.items()})
    return Config(**built)  # type: ignore[arg-type]


def reference_markdown() -> str:
    """The config reference, generated from the dataclasses (docs/reference/config.md)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `yun config-doc` from `src/yunstack/config.py`. Set values in a TOML file",
        "(`yun up --config FILE`, default `STATE_DIR/yunstack.toml`) or with environment variables",
        "`YUN_<SECTION>_<FIELD>`.",
        "",
    ]
    for name, cls in sections().items():
        lines += [f"## [{name}]", "", (cls.__doc__ or "").strip(), "",
                  "| key | type | default | env | meaning |", "|---|---|---|---|---|"]
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else ""
            lines.append(
                f"| `{f.name}` | {hints[f.name].__name__} | `{default!r}` | "
                f"`YUN_{name.upper()}_{f.name.upper()}` | {f.metadata.get('help', '')} |"
            )
        lines.append("")
    return "\n".join(lines)
