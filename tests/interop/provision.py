"""Create what Tempest needs in a fresh `yun up` and write its workspace (tempest.conf, accounts.yaml).

Runs in yunstack's own venv (openstacksdk comes with python-openstackclient):

    python -m tests.interop.provision --clouds STATE/clouds.yaml --state-dir STATE --workspace WS

Accounts: Tempest is run with pre-provisioned credentials (no dynamic credentials, so it never
needs to create users itself). With ``--concurrency 2`` each worker locks a primary, an alt and
a reader of the primary's project, so there are four member accounts in four projects, a reader
in each of those projects, and the bootstrap admin. Members come first in accounts.yaml: Tempest
takes ``alt`` as the first free account in file order, and a reader taken as alt breaks tests.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.interop.conf import CloudFacts, tempest_conf

PROJECTS = 4
NETWORK = "interop-net"
NETWORK_CIDR = "10.200.0.0/24"
IMAGE_ALT = "tiny-alt"


@dataclass(frozen=True)
class Account:
    username: str
    project_name: str
    password: str
    roles: tuple[str, ...]
    admin: bool = False

    def entry(self) -> dict[str, Any]:
        e: dict[str, Any] = {"username": self.username, "project_name": self.project_name,
                             "password": self.password, "domain_name": "Default", "roles": list(self.roles)}
        if self.admin:
            e["types"] = ["admin"]
        return e


def _connect(clouds: Path, cloud: str) -> Any:
    import openstack  # imported here: only this command needs the SDK

    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    return openstack.connect(cloud=cloud)


def make_accounts(conn: Any, admin: dict[str, str]) -> list[Account]:
    member = conn.identity.find_role("member", ignore_missing=False)
    reader = conn.identity.find_role("reader", ignore_missing=False)
    members: list[Account] = []
    readers: list[Account] = []
    for i in range(1, PROJECTS + 1):
        project = conn.identity.create_project(name=f"interop-{i}", domain_id="default",
                                               description="Tempest interop account")
        for name, role, into in ((f"interop-{i}", member, members), (f"interop-{i}-reader", reader, readers)):
            password = secrets.token_urlsafe(16)
            user = conn.identity.create_user(name=name, password=password, domain_id="default",
                                             default_project_id=project.id)
            conn.identity.assign_project_role_to_user(project, user, role)
            into.append(Account(username=name, project_name=project.name, password=password, roles=(role.name,)))
    boss = Account(username=admin["username"], project_name=admin["project_name"], password=admin["password"],
                   roles=("admin",), admin=True)
    return [*members, *readers, boss]


def make_network(conn: Any) -> Any:
    """One shared network (IPv4 and IPv6 subnets) that every account boots servers on."""
    net = conn.network.create_network(name=NETWORK, shared=True)
    conn.network.create_subnet(network_id=net.id, name=f"{NETWORK}-v4", ip_version=4, cidr=NETWORK_CIDR)
    return net


def make_alt_image(conn: Any, state_dir: Path) -> str:
    """A second public image (a copy of the tiny image), so rebuild really changes the image."""
    tiny = state_dir / "tiny-image" / "tiny.qcow2"
    image = conn.image.create_image(name=IMAGE_ALT, filename=str(tiny), disk_format="qcow2",
                                    container_format="bare", visibility="public", min_ram=96, wait=True)
    return str(image.id)


def compute_max_microversion(base_url: str) -> str:
    versions = httpx.get(f"{base_url}/compute/", timeout=10).json()["versions"]
    return str(max((v for v in versions if v.get("version")), key=lambda v: tuple(
        int(x) for x in v["version"].split(".")))["version"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--clouds", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--workspace", type=Path, required=True)
    args = p.parse_args(argv)
    auth = yaml.safe_load(args.clouds.read_text())["clouds"]["yunstack"]["auth"]
    base_url = auth["auth_url"].removesuffix("/identity/v3")
    conn = _connect(args.clouds, "yunstack")
    accounts = make_accounts(conn, auth)
    net = make_network(conn)
    image = conn.image.find_image("tiny", ignore_missing=False)
    facts = CloudFacts(
        base_url=base_url,
        image_ref=str(image.id),
        image_ref_alt=make_alt_image(conn, args.state_dir),
        flavor_ref="42", flavor_ref_alt="84",  # m1.nano and m1.micro from the bootstrap flavors
        fixed_network_name=net.name,
        public_network_id=str(conn.network.find_network("public", ignore_missing=False).id),
        network_extensions=sorted(e.alias for e in conn.network.extensions()),
        compute_max_microversion=compute_max_microversion(base_url),
    )
    ws = args.workspace
    (ws / "etc").mkdir(parents=True, exist_ok=True)
    (ws / "etc" / "accounts.yaml").write_text(yaml.safe_dump([a.entry() for a in accounts], sort_keys=False))
    (ws / "etc" / "tempest.conf").write_text(tempest_conf(facts, ws))
    for sub in ("logs", "tempest_lock"):
        shutil.rmtree(ws / sub, ignore_errors=True)
        (ws / sub).mkdir()
    print(f"provisioned {len(accounts)} accounts, network {net.name}, images {facts.image_ref} "
          f"{facts.image_ref_alt}; compute up to {facts.compute_max_microversion}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
