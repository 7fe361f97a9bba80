"""The identity message a memory template's clone is given over its identity port (identity)."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yunstack.compute.driver import ConfigDrive, Ipv4Config
from yunstack.compute.qemu import identity
from yunstack.errors import DriverError


def _records(data: bytes) -> dict[str, bytes]:
    """Parse a message as the guest's listener does (hotplug.c)."""
    head, _, body = data.partition(b"\n")
    magic, version, length = head.split(b" ")
    assert (magic, int(version), int(length)) == (b"yunstack-identity", 1, len(body))
    found: dict[str, bytes] = {}
    while body:
        line, _, body = body.partition(b"\n")
        name, size = line.split(b" ")
        found[name.decode()], body = body[:int(size)], body[int(size):]
    return found


def test_the_message_carries_the_config_drives_files_the_clock_and_the_macs() -> None:
    drive = ConfigDrive(meta_data={"uuid": "u1", "hostname": "web-1"}, user_data=b"#!/bin/sh\necho 'a b'\n\n",
                        network_data={"links": []}, vendor_data={"x": 1})
    found = _records(identity.message(drive, [("0e:79:75:6e:00:00", "fa:16:3e:00:00:01")], clock=lambda: 1234.5))
    assert found == {
        "meta_data.json": b'{"hostname": "web-1", "uuid": "u1"}',
        "user_data": b"#!/bin/sh\necho 'a b'\n\n",  # bytes as they are, newlines and all
        "network_data.json": b'{"links": []}',
        "host_time": b"1234.500\n",
        "macs": b"0e:79:75:6e:00:00 fa:16:3e:00:00:01\n",
    }  # no vendor data: the guest's listener takes only the files it knows
    assert set(found) <= set(identity.FILES)


def test_a_clone_without_nics_is_told_no_macs() -> None:
    assert "macs" not in _records(identity.message(ConfigDrive(meta_data={"uuid": "u"}), []))


def test_an_identity_larger_than_the_guest_takes_is_refused() -> None:
    with pytest.raises(DriverError, match="at most"):
        identity.message(ConfigDrive(meta_data={}, user_data=b"x" * (identity.MAX_MESSAGE + 1)), [])


async def _serve_once(tmp_path: Path, data: bytes, answer: bytes | None, timeout: float = 5.0) -> bytes:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.readexactly(len(data)))
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        await reader.read()  # until the host closes: it waits for the answer first
        writer.close()

    server = await asyncio.start_unix_server(serve, str(tmp_path / "id.sock"))
    async with server:
        await identity.send(tmp_path / "id.sock", data, "instance t", timeout)
        return await got


def test_send_writes_the_whole_message_and_closes_once_the_guest_answers(tmp_path: Path) -> None:
    """QEMU drops what it has not handed to the guest when the connection ends: the host waits."""
    assert asyncio.run(_serve_once(tmp_path, b"x" * 300_000, identity.ACK)) == b"x" * 300_000


def test_a_guest_that_answers_otherwise_or_not_at_all_did_not_take_it(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="did not take its identity"):
        asyncio.run(_serve_once(tmp_path, b"x", b"what?\n"))
    (tmp_path / "id.sock").unlink()
    with pytest.raises(DriverError, match="no answer within 1 s"):
        asyncio.run(_serve_once(tmp_path, b"x", None, timeout=1.0))


def test_a_guest_whose_port_is_gone_is_a_driver_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="could not give the guest its identity"):
        asyncio.run(identity.send(tmp_path / "none.sock", b"x", "instance t"))


def _strings(blob: bytes) -> list[bytes]:
    """The SSH wire-format strings in ``blob``."""
    found = []
    while blob:
        (size,) = struct.unpack(">I", blob[:4])
        found.append(blob[4:4 + size])
        blob = blob[4 + size:]
    return found


def test_the_host_key_is_dropbears_ed25519_file_and_its_public_line() -> None:
    key = identity.HostKey()
    kind, halves = _strings(key.dropbear)
    assert (kind, len(halves)) == (b"ssh-ed25519", 64)
    derived = Ed25519PrivateKey.from_private_bytes(halves[:32]).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert derived == halves[32:]  # the private half is the public half's
    kind_word, encoded = key.public.split(" ")
    assert kind_word == "ssh-ed25519" and _strings(base64.b64decode(encoded)) == [b"ssh-ed25519", derived]
    assert identity.HostKey().public != key.public  # a new one each time
    found = _records(identity.message(ConfigDrive(meta_data={"uuid": "u"}), [], key))
    assert found["ssh_host_ed25519_key"] == key.dropbear
    assert found["ssh_host_ed25519_key.pub"] == f"{key.public}\n".encode()


def test_with_a_host_key_the_message_carries_what_the_guests_own_resume_needs() -> None:
    """The guest's C resume (resume.c) parses no JSON: the host works out what cloudinit would."""
    meta = {"uuid": "u1", "hostname": "Web_1.example.org", "name": "ignored",
            "public_keys": {"b": "ssh-ed25519 BBB b\n", "a": "ssh-ed25519 AAA a\nssh-ed25519 BBB b", "x": 3},
            "meta": {"role": "db\nsecond line", "n": 3, "ok": True, "nested": {"no": 1}, ".hidden": "no",
                     "a/b": "no", "": "no"},
            "random_seed": base64.b64encode(b"\x00seed\xff").decode()}
    found = _records(identity.message(
        ConfigDrive(meta_data=meta), [], identity.HostKey(),
        addresses=[("fa:16:3e:00:00:01", Ipv4Config(address="10.0.0.5/24", gateway="10.0.0.1", dns=("10.0.0.2",),
                                                    domain="openstacklocal", mtu=1450)),
                   ("fa:16:3e:00:00:02", Ipv4Config(address="10.1.0.5/16", gateway=None, dns=(), domain="",
                                                    mtu=1500))]))
    assert found["resume"].decode().splitlines() == [
        "instance-id u1",
        "hostname Web1",  # cloudinit's rule: the first label; letters, digits and '-'
        "ipv4 fa:16:3e:00:00:01 10.0.0.5/24 10.0.0.1 1450 openstacklocal 10.0.0.2",
        "ipv4 fa:16:3e:00:00:02 10.1.0.5/16 - 1500 - -",
        "meta role db",  # a value's first line, as cloudinit's md() reads it
        "meta n 3",
        "meta ok true",
    ]
    assert found["authorized_keys"] == b"ssh-ed25519 AAA a\nssh-ed25519 BBB b\n"  # sort -u of every line
    assert found["random_seed"] == b"\x00seed\xff"
    assert set(found) <= set(identity.FILES)


def test_a_hostname_of_nothing_usable_leaves_the_guests_own() -> None:
    assert identity.hostname({"hostname": "...", "name": "x"}) is None
    assert identity.hostname({"name": "db-2.internal"}) == "db-2"
    found = _records(identity.message(ConfigDrive(meta_data={"uuid": "u", "random_seed": "not base64!"}), [],
                                      identity.HostKey()))
    assert found["resume"] == b"instance-id u\n"
    assert "authorized_keys" not in found and "random_seed" not in found


@pytest.mark.parametrize(("value", "line"), [
    ("db", "meta k db"),
    ("v\r\nsecond", "meta k v"),  # jsonflat.awk drops \r, \b and \f
    ("\nafter", "meta k after"),  # the first line that is not empty
    ("", "meta k "),  # an empty string: an empty file
    ("\r", "meta k "),
    ("\n\n", None),  # nothing but newlines: no file
    ("caf\u00e9", "meta k caf?"),  # outside ASCII: '?', as the awk reads \\u escapes
])
def test_a_meta_value_is_sent_as_the_boots_cloudinit_reads_it(value: str, line: str | None) -> None:
    lines = identity.digest({"uuid": "u", "meta": {"k": value}})["resume"].decode().splitlines()
    assert [x for x in lines if x.startswith("meta ")] == ([line] if line is not None else [])
