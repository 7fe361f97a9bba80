"""The metadata service's upstream half: signature check and the documents, framework-free.

A metadata proxy (``metadata_proxy.py``) inside a router or DHCP namespace receives an
instance's request to ``http://169.254.169.254/...`` and forwards it to the API with three
headers: the network id it serves, the instance's source address, and
``HMAC-SHA256(secret, network_id + "\\n" + address)``.  The API (``api/metadata.py``) checks the
signature with ``verify``, resolves (network id, address) to the one instance that owns it, and
answers with ``respond``: an instance can only ever read its own data, because the address is the
one the proxy saw (anti-spoofing makes sure it is the instance's own) and the proxy is the only
holder of the secret besides the API.

Paths (the OpenStack and EC2 trees that cloud-init and friends read)::

    /openstack  /openstack/latest/  meta_data.json  user_data  network_data.json  vendor_data.json
    /  /latest/  /latest/meta-data/  instance-id  hostname  local-ipv4  public-keys/0/openssh-key ...
    /latest/user-data
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETWORK_HEADER = "X-Yunstack-Network-Id"
ADDRESS_HEADER = "X-Yunstack-Instance-Address"
SIGNATURE_HEADER = "X-Yunstack-Metadata-Signature"

OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04", "latest")


@dataclass(frozen=True, kw_only=True)
class InstanceMetadata:
    """What the metadata service may tell one instance about itself."""

    uuid: str
    name: str
    hostname: str
    project_id: str = ""
    availability_zone: str = "nova"
    launch_index: int = 0
    instance_type: str = ""
    image_id: str = ""
    local_ipv4: str = ""
    public_ipv4: str = ""
    mac: str = ""
    public_keys: Mapping[str, str] = field(default_factory=dict)  # key name -> public key
    user_data: bytes | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    network_data: Mapping[str, Any] = field(default_factory=dict)
    security_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetadataResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


NOT_FOUND = MetadataResponse(404, b"Not Found\n")


# -- the shared secret and the signature -----------------------------------------------------------


def ensure_secret(path: Path) -> bytes:
    """Read the metadata secret, creating it (0600, 32 random bytes as hex) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # never replaces a secret another process wrote meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def sign(secret: bytes, network_id: str, address: str) -> str:
    return hmac.new(secret, f"{network_id}\n{address}".encode(), hashlib.sha256).hexdigest()


def verify(secret: bytes, network_id: str, address: str, signature: str) -> bool:
    if not (secret and network_id and address and signature):
        return False
    return hmac.compare_digest(sign(secret, network_id, address), signature)


# -- the documents ---------------------------------------------------------------------------------


def meta_data_json(md: InstanceMetadata) -> dict[str, Any]:
    """OpenStack ``meta_data.json`` (nova's shape, minus what we have no use for)."""
    return {
        "uuid": md.uuid,
        "name": md.name,
        "hostname": md.hostname,
        "launch_index": md.launch_index,
        "availability_zone": md.availability_zone,
        "project_id": md.project_id,
        "meta": dict(md.meta),
        "public_keys": {k: v for k, v in md.public_keys.items()},
        "keys": [{"name": k, "type": "ssh", "data": v} for k, v in md.public_keys.items()],
        "devices": [],
    }


def _text(body: str) -> MetadataResponse:
    return MetadataResponse(200, body.encode())


def _json(doc: object) -> MetadataResponse:
    return MetadataResponse(200, json.dumps(doc).encode(), "application/json")


def _listing(items: list[str]) -> MetadataResponse:
    return _text("\n".join(items))


def respond(path: str, md: InstanceMetadata) -> MetadataResponse:
    """The answer to ``GET path`` for instance ``md`` (``path`` as the instance asked it)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts:
        return _listing([*EC2_VERSIONS, "openstack"])
    if parts[0] == "openstack":
        return _openstack(parts[1:], md)
    if parts[0] in EC2_VERSIONS:
        return _ec2(parts[1:], md)
    return NOT_FOUND


def _openstack(parts: list[str], md: InstanceMetadata) -> MetadataResponse:
    if not parts:
        return _listing(list(OPENSTACK_VERSIONS))
    if parts[0] not in OPENSTACK_VERSIONS or len(parts) > 2:
        return NOT_FOUND
    files = ["meta_data.json", "network_data.json", "vendor_data.json", "vendor_data2.json"]
    if md.user_data is not None:
        files.append("user_data")
    if len(parts) == 1:
        return _listing(files)
    name = parts[1]
    if name == "meta_data.json":
        return _json(meta_data_json(md))
    if name == "network_data.json":
        return _json(dict(md.network_data) or {"links": [], "networks": [], "services": []})
    if name in ("vendor_data.json", "vendor_data2.json"):
        return _json({})
    if name == "user_data" and md.user_data is not None:
        return MetadataResponse(200, md.user_data, "application/octet-stream")
    return NOT_FOUND


def _ec2_tree(md: InstanceMetadata) -> dict[str, Any]:
    keys = list(md.public_keys.items())
    tree: dict[str, Any] = {
        "ami-id": md.image_id or "ami-00000000",
        "ami-launch-index": str(md.launch_index),
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
        "hostname": md.hostname,
        "instance-action": "none",
        "instance-id": md.uuid,
        "instance-type": md.instance_type,
        "local-hostname": md.hostname,
        "local-ipv4": md.local_ipv4,
        "placement": {"availability-zone": md.availability_zone},
        "public-hostname": md.hostname,
        "public-ipv4": md.public_ipv4,
        "reservation-id": "r-" + md.uuid.split("-")[0],
        "security-groups": "\n".join(md.security_groups),
    }
    if md.mac:
        tree["mac"] = md.mac
    if keys:
        tree["public-keys"] = {str(i): {"openssh-key": key, "_name": name}
                               for i, (name, key) in enumerate(keys)}
    return tree


def _ec2(parts: list[str], md: InstanceMetadata) -> MetadataResponse:
    if not parts:
        return _listing(["meta-data/", *(["user-data"] if md.user_data is not None else [])])
    if parts[0] == "user-data":
        if md.user_data is None or len(parts) > 1:
            return NOT_FOUND
        return MetadataResponse(200, md.user_data, "application/octet-stream")
    if parts[0] != "meta-data":
        return NOT_FOUND
    node: Any = _ec2_tree(md)
    for part in parts[1:]:
        if not isinstance(node, dict) or part not in node or part.startswith("_"):
            return NOT_FOUND
        node = node[part]
    if isinstance(node, dict):
        if parts[1:] == ["public-keys"]:
            return _listing([f"{i}={v['_name']}" for i, v in node.items()])
        return _listing([f"{k}/" if isinstance(v, dict) else k
                         for k, v in node.items() if not k.startswith("_")])
    return _text(str(node))
