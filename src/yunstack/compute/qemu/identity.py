"""A memory template's clone is given its identity over a virtio-serial port, without a hot-plug.

A clone wakes up as its template: the template's hostname, MACs, lease and RNG state.  Its host
writes one message to the clone's identity port (``cmdline.IDENTITY_PORT``, a unix socket on the
host, ``InstancePaths.identity``): the files its config drive carries (``meta_data.json``,
``network_data.json``, ``user_data``, ``yunstack/host_time``), ``macs``, a line
``TEMPLATE-MAC OWN-MAC`` per NIC, and a new ssh host key (``HostKey``), made here because making
it in the guest costs a clone's one vCPU a good part of its resume under TCG.  The host holds the
guest's memory anyway, so it learns nothing it could not read; it keeps no copy.

It also sends what the guest would otherwise work out of those files (``digest``): ``resume``
(instance id, hostname, what each NIC's DHCP lease will carry, the ``meta`` keys, one per line),
``authorized_keys`` and ``random_seed``.  Under TCG every process a clone starts costs it
milliseconds of translation, so the tiny image's ``yunstack-hotplug`` takes the identity itself,
in C, and starts only dropbear, the DHCP client and the user data; a message without ``resume``
goes to the shell resume a hot-plugged config drive starts (docs/explanation/memory-templates.md,
"Identity over virtio-serial").  The format, which the guest's listener parses::

    yunstack-identity 1 LENGTH\\n    then LENGTH bytes of records, each
    NAME SIZE\\n                     then SIZE bytes, the file NAME
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yunstack.compute.driver import ConfigDrive, Ipv4Config
from yunstack.compute.qemu import configdrive
from yunstack.errors import DriverError

VERSION = 1
# The guest's listener takes a message of at most this many bytes (hotplug.c's MAX_MESSAGE).
MAX_MESSAGE = 4 << 20
# The files the guest's listener keeps (hotplug.c's FILES; it skips others); vendor data is not among them.
FILES = ("meta_data.json", "network_data.json", "user_data", "host_time", "macs", "ssh_host_ed25519_key",
         "ssh_host_ed25519_key.pub", "resume", "authorized_keys", "random_seed")
# A meta key the guest writes as a file of /run/yunstack/meta (cloudinit's rule).
_META_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
SEND_TIMEOUT = 30.0  # to the guest's answer: a clone under TCG on a loaded host is slow to wake
ACK = b"yunstack-identity ok\n"


def _string(data: bytes) -> bytes:
    """An SSH wire-format string: its length (4 bytes, big-endian), then its bytes."""
    return struct.pack(">I", len(data)) + data


class HostKey:
    """A new ed25519 ssh host key: the file dropbear reads, and its public key as ``authorized_keys``
    and ``known_hosts`` write it (``ssh-ed25519 BASE64``)."""

    def __init__(self) -> None:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # dropbear's own format: the key type, then the private and public halves as one string.
        self.dropbear = _string(b"ssh-ed25519") + _string(private + public)
        self.public = "ssh-ed25519 " + base64.b64encode(_string(b"ssh-ed25519") + _string(public)).decode()


def hostname(meta: Mapping[str, Any]) -> str | None:
    """The guest's hostname as the tiny image's cloudinit makes it: the first label of
    ``hostname`` (else ``name``), letters, digits and '-' only; None when nothing is left."""
    raw = meta.get("hostname") or meta.get("name") or ""
    name = re.sub(r"[^A-Za-z0-9-]", "", str(raw).split("\n", 1)[0].split(".", 1)[0])
    return name or None


def _as_read(text: str) -> str:
    """A JSON string as the tiny image's jsonflat.awk reads it: carriage returns, backspaces and
    form feeds dropped, and every character but a newline, a tab and printable ASCII a '?'."""
    return "".join("" if c in "\r\b\f" else c if c in "\n\t" or " " <= c <= "\x7f" else "?" for c in text)


def _first_line(value: Any) -> str | None:
    """The file cloudinit writes for a scalar: a string's first non-empty line (an empty string is
    an empty line; nothing but newlines, no file), else its JSON text."""
    if isinstance(value, str):
        read = _as_read(value)
        lines = [line for line in read.split("\n") if line]
        return lines[0] if lines else ("" if read == "" else None)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return None  # an object or array: cloudinit writes no file for it either


def _ipv4_line(mac: str, config: Ipv4Config) -> str:
    return (f"ipv4 {mac} {config.address} {config.gateway or '-'} {config.mtu} {config.domain or '-'} "
            f"{','.join(config.dns) or '-'}")


def digest(meta: Mapping[str, Any], addresses: Sequence[tuple[str, Ipv4Config]] = ()) -> dict[str, bytes]:
    """``resume``, ``authorized_keys`` and ``random_seed`` for ``meta`` (meta_data.json) and what
    the NICs' DHCP leases will carry, ``(own_mac, config)`` each: what the boot's cloudinit reads
    out of meta_data.json and its lease, so that the clone's resume parses no JSON and need not
    wait for DHCP."""
    lines = [f"instance-id {meta.get('uuid', '')}"]
    name = hostname(meta)
    if name:
        lines.append(f"hostname {name}")
    lines += [_ipv4_line(mac, config) for mac, config in addresses]
    values = meta.get("meta")
    for key, value in (values.items() if isinstance(values, Mapping) else ()):
        line = _first_line(value)
        if line is not None and _META_KEY.fullmatch(str(key)):
            lines.append(f"meta {key} {line}")
    found = {"resume": ("\n".join(lines) + "\n").encode()}
    keys = meta.get("public_keys")
    authorized = sorted({line for key in (keys.values() if isinstance(keys, Mapping) else ()) if isinstance(key, str)
                         for line in _as_read(key).split("\n") if line})
    if authorized:
        found["authorized_keys"] = ("\n".join(authorized) + "\n").encode()
    seed = meta.get("random_seed")
    if isinstance(seed, str):
        with contextlib.suppress(binascii.Error, ValueError):
            found["random_seed"] = base64.b64decode(seed, validate=True)
    return found


def message(drive: ConfigDrive, macs: Sequence[tuple[str, str]], host_key: HostKey | None = None, *,
            addresses: Sequence[tuple[str, Ipv4Config]] = (), clock: Callable[[], float] = time.time) -> bytes:
    """The identity message of a clone with config drive ``drive`` whose NICs change from the
    template's MAC to their own, ``(template_mac, own_mac)`` each, whose NICs lease the
    ``addresses`` (``digest``), and whose ssh host key is ``host_key`` (without one, the shell
    resume makes one in the guest)."""
    files = {name: data for name, data in configdrive.files(drive).items() if name in FILES}
    files["host_time"] = configdrive.host_time(clock)
    if macs:
        files["macs"] = "".join(f"{old} {new}\n" for old, new in macs).encode()
    if host_key is not None:
        files["ssh_host_ed25519_key"] = host_key.dropbear
        files["ssh_host_ed25519_key.pub"] = (host_key.public + "\n").encode()
        files |= digest(drive.meta_data, addresses)  # the guest's own resume needs the host key
    body = b"".join(f"{name} {len(data)}\n".encode() + data for name, data in files.items())
    if len(body) > MAX_MESSAGE:
        raise DriverError(detail=f"the identity is {len(body)} bytes; a clone takes at most {MAX_MESSAGE}")
    return f"yunstack-identity {VERSION} {len(body)}\n".encode() + body


async def send(socket: Path, data: bytes, label: str, timeout: float = SEND_TIMEOUT) -> None:
    """Write ``data`` to the identity port behind ``socket`` and wait for the guest's answer
    (``ACK``: it has the whole message and starts its resume), then close.  Not before: QEMU drops
    what it has not yet handed to the guest when the connection ends."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket))
            try:
                writer.write(data)
                await writer.drain()
                answer = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise DriverError(detail=f"{label}: could not give the guest its identity over {socket}: "
                                 f"{str(exc) or f'no answer within {timeout:.0f} s'}") from exc
    if answer != ACK:
        raise DriverError(detail=f"{label}: the guest did not take its identity over {socket} "
                                 f"(it answered {answer[:80]!r})")
