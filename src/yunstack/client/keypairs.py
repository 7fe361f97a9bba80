"""Key pairs (Nova ``os-keypairs``): list, create (the private key is returned once), import, delete."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from yunstack.client.http import YunClient

# 2.2: a key pair has a type (ssh or x509).
_MICROVERSION = {"OpenStack-API-Version": "compute 2.2"}


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    name: str
    fingerprint: str
    type: str


@dataclass(frozen=True, kw_only=True)
class NewKeyPair:
    """A key pair the API made: ``private_key`` exists only in this answer; nothing keeps it."""

    name: str
    fingerprint: str
    private_key: str


def list_keypairs(client: YunClient) -> list[KeyPair]:
    found = client.get("compute", "/os-keypairs", headers=_MICROVERSION)["keypairs"]
    return [KeyPair(name=str(k["keypair"]["name"]), fingerprint=str(k["keypair"].get("fingerprint", "")),
                    type=str(k["keypair"].get("type", "ssh"))) for k in found]


def create_keypair(client: YunClient, name: str) -> NewKeyPair:
    k = client.post("compute", "/os-keypairs", json={"keypair": {"name": name}}, headers=_MICROVERSION)["keypair"]
    return NewKeyPair(name=str(k["name"]), fingerprint=str(k.get("fingerprint", "")),
                      private_key=str(k["private_key"]))


def import_keypair(client: YunClient, name: str, public_key: str) -> KeyPair:
    k = client.post("compute", "/os-keypairs", json={"keypair": {"name": name, "public_key": public_key}},
                    headers=_MICROVERSION)["keypair"]
    return KeyPair(name=str(k["name"]), fingerprint=str(k.get("fingerprint", "")), type=str(k.get("type", "ssh")))


def delete_keypair(client: YunClient, name: str) -> None:
    client.delete("compute", f"/os-keypairs/{quote(name, safe='')}")
