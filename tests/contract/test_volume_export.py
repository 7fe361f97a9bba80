"""NBD exports of volumes (``volume.export.NbdExports``) with the real ``qemu-storage-daemon``.

Clients are ``qemu-io`` over TCP on 127.0.0.1 with TLS-PSK credentials of their own: the right key
reads and writes the volume's data; a wrong key, a wrong identity or no TLS at all is refused.
The daemons outlive the ``NbdExports`` that started them, so each test stops what it started and
the fixture kills (and reports) any daemon a failed test left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from yunstack.errors import Conflict, DriverError, DriverUnavailable, ValidationFailed
from yunstack.volume.backend import LocalDisk
from yunstack.volume.export import Export, NbdExports

pytestmark = pytest.mark.integration

VOLUME = "0b7c3f2e-5d1a-4c8e-9f00-1234567890ab"
OTHER = "5e0d9a41-77b2-4a55-8c3e-abcdefabcdef"


@pytest.fixture
def root() -> Iterator[Path]:
    """The exports' state directory; any daemon still serving from it at the end is killed."""
    with tempfile.TemporaryDirectory(prefix="ys-nbd-") as name:
        path = Path(name)
        yield path / "exports"
        left = _daemons(path)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], f"daemons left running: {left}"


def _daemons(under: Path) -> list[int]:
    """Live ``qemu-storage-daemon`` processes whose command line names a path under ``under``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if "qemu-storage-daemon" in cmdline.split("\0")[0] and str(under) in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _volume(folder: Path, name: str = "vol.qcow2", fmt: str = "qcow2") -> LocalDisk:
    path = folder / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "64M"], check=True, timeout=60)
    subprocess.run(["qemu-io", "-f", fmt, "-c", "write -P 0xa5 0 64k", str(path)], check=True,
                   capture_output=True, timeout=60)
    return LocalDisk(path, fmt)


def _client(folder: Path, identity: str, key: str) -> Path:
    """A client's key directory, as a compute host holds it."""
    folder.mkdir(mode=0o700)
    (folder / "keys.psk").write_text(f"{identity}:{key}\n")
    (folder / "keys.psk").chmod(0o600)
    return folder


def _nbd_io(export: Export, keys: Path | None, *commands: str) -> subprocess.CompletedProcess[str]:
    """``qemu-io`` on the export, with TLS-PSK credentials from ``keys`` (None: no TLS at all)."""
    opts = (f"driver=raw,file.driver=nbd,file.server.type=inet,file.server.host={export.host},"
            f"file.server.port={export.port},file.export={export.name}")
    argv = ["qemu-io"]
    if keys is not None:
        identity = (keys / "keys.psk").read_text().split(":", 1)[0]
        argv += ["--object", f"tls-creds-psk,id=tls0,endpoint=client,dir={keys},username={identity}"]
        opts += ",file.tls-creds=tls0"
    argv += ["--image-opts", opts]
    for command in commands:
        argv += ["-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0 and "fail" not in result.stdout.lower(), result.stdout + result.stderr
    return result.stdout


def _local_io(local: LocalDisk, command: str) -> str:
    return _ok(subprocess.run(["qemu-io", "-r", "-f", local.format, "-c", command, str(local.path)],
                              capture_output=True, text=True, timeout=60))


async def test_an_export_serves_the_volume_data_to_the_key_holder_only(root: Path, tmp_path: Path) -> None:
    local = _volume(tmp_path)
    exports = NbdExports(root)
    export = await exports.start(VOLUME, local, "127.0.0.1")
    assert (export.host, export.name, export.psk_identity, export.path) == ("127.0.0.1", VOLUME, "yunstack", local.path)
    assert len(export.psk_key) == 64 and int(export.psk_key, 16) >= 0 and export.psk_key not in repr(export)
    folder = root / VOLUME  # the key is a secret: ours alone to read
    assert folder.stat().st_mode & 0o777 == 0o700 and root.stat().st_mode & 0o777 == 0o700
    assert all((folder / f).stat().st_mode & 0o777 == 0o600 for f in ("keys.psk", "export.json"))

    # The right key reads the volume's data, not its qcow2 file (the daemon opens it with its format
    # driver): 64 MiB whose first 64 KiB are 0xa5; and writes go into the volume.
    keys = _client(tmp_path / "client", "yunstack", export.psk_key)
    out = _ok(_nbd_io(export, keys, "length", "read -P 0xa5 0 64k", "write -P 0x3c 1M 64k", "read -P 0x3c 1M 64k"))
    assert "64 MiB" in out

    # A wrong key, a known key under another identity, and no TLS at all are refused before any data.
    wrong = _client(tmp_path / "wrong", "yunstack", "ab" * 32)
    stranger = _client(tmp_path / "stranger", "other-host", export.psk_key)
    for refused in (_nbd_io(export, wrong, "read 0 4k"), _nbd_io(export, stranger, "read 0 4k")):
        assert refused.returncode != 0 and "TLS handshake failed" in refused.stderr, refused.stderr
    plain = _nbd_io(export, None, "read 0 4k")
    assert plain.returncode != 0 and "TLS" in plain.stderr, plain.stderr

    # Stopping ends the daemon (waited for: the image is free again) and leaves no file behind.
    await exports.stop(VOLUME)
    await exports.stop(VOLUME)  # absent: no error
    assert _daemons(root) == [] and not folder.exists()
    _local_io(local, "read -P 0x3c 1M 64k")
    assert _nbd_io(export, keys, "read 0 4k").returncode != 0


async def test_start_adopts_a_running_export_and_a_new_object_finds_it(root: Path, tmp_path: Path) -> None:
    local, other = _volume(tmp_path), _volume(tmp_path, "other.raw", "raw")
    exports = NbdExports(root)
    export = await exports.start(VOLUME, local, "127.0.0.1")
    assert await exports.start(VOLUME, local, "127.0.0.1") == export  # the same daemon, port and key
    assert await exports.start(VOLUME, local, "127.0.0.1", port=export.port) == export
    assert len(_daemons(root)) == 1
    with pytest.raises(Conflict):  # another file under the same volume id: never swapped under a guest
        await exports.start(VOLUME, other, "127.0.0.1")
    with pytest.raises(Conflict):
        await exports.start(VOLUME, local, "127.0.0.1", identity="host-2")
    second = await exports.start(OTHER, other, "127.0.0.1")
    assert second.port != export.port and second.psk_key != export.psk_key  # a daemon and a key per export

    # An agent restart: a new object finds both in the state directory.
    restarted = NbdExports(root)
    assert await restarted.running() == {VOLUME: export, OTHER: second}
    assert await restarted.start(VOLUME, local, "127.0.0.1") == export
    await restarted.stop(VOLUME)
    assert await restarted.running() == {OTHER: second} and await exports.running() == {OTHER: second}
    _ok(_nbd_io(second, _client(tmp_path / "client", "yunstack", second.psk_key), "read -P 0xa5 0 64k"))
    await exports.stop(OTHER)
    assert await exports.running() == {} and await exports.stopped() == {}
    assert _daemons(root) == [] and list(root.iterdir()) == []


async def test_a_daemon_that_died_is_started_again_with_its_port_and_key(root: Path, tmp_path: Path) -> None:
    local, other = _volume(tmp_path), _volume(tmp_path, "other.qcow2")
    exports = NbdExports(root)
    export = await exports.start(VOLUME, local, "127.0.0.1")
    second = await exports.start(OTHER, other, "127.0.0.1")
    await _kill(root / VOLUME / "qsd.pid")
    assert await exports.running() == {OTHER: second} and await exports.stopped() == {VOLUME: export}

    # A pid that now belongs to another process is not taken for the export's daemon, even when
    # that process is another export's daemon; and stop never signals it.
    (root / VOLUME / "qsd.pid").write_text(f"{(root / OTHER / 'qsd.pid').read_text().strip()}\n")
    assert VOLUME not in await exports.running()

    # The client that held the key (a guest reconnecting after a storage host reboot) gets in again.
    assert await exports.start(VOLUME, local, "127.0.0.1") == export
    _ok(_nbd_io(export, _client(tmp_path / "client", "yunstack", export.psk_key), "read -P 0xa5 0 64k"))
    await _kill(root / VOLUME / "qsd.pid")
    (root / VOLUME / "qsd.pid").write_text(f"{os.getpid()}\n")  # this very test: not a daemon
    await exports.stop(VOLUME)
    assert not (root / VOLUME).exists() and await exports.running() == {OTHER: second}
    await exports.stop(OTHER)


async def test_a_bad_request_or_a_taken_port_leaves_nothing(root: Path, tmp_path: Path) -> None:
    local = _volume(tmp_path)
    exports = NbdExports(root)
    for volume_id, disk, host in (("../x", local, "127.0.0.1"), (VOLUME, LocalDisk(local.path, "vmdk"), "127.0.0.1"),
                                  (VOLUME, LocalDisk(Path("vol.qcow2"), "qcow2"), "127.0.0.1"),
                                  (VOLUME, local, "localhost"), (VOLUME, local, "127.0.0.1,port=1")):
        with pytest.raises(ValidationFailed):
            await exports.start(volume_id, disk, host)
    with pytest.raises(ValidationFailed):
        await exports.start(VOLUME, local, "127.0.0.1", identity="a:b")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(DriverUnavailable, match="in use"):
            await exports.start(VOLUME, local, "127.0.0.1", port=taken.getsockname()[1])
    with pytest.raises(DriverError, match=r"192\.0\.2\.1"):  # not an address of this host
        await exports.start(VOLUME, local, "192.0.2.1")
    await exports.start(VOLUME, local, "127.0.0.1")
    with pytest.raises(DriverError, match="lock"):  # two daemons cannot open one file
        await exports.start(OTHER, local, "127.0.0.1")
    await exports.stop(VOLUME)
    assert _daemons(root) == [] and list(root.iterdir()) == []
    assert await exports.running() == {}


async def _kill(pidfile: Path, timeout: float = 10.0) -> None:
    """SIGKILL the daemon of ``pidfile`` and wait until it is gone (a zombie has let go of everything)."""
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pid in _daemons(pidfile.parent):
        assert loop.time() < deadline, f"daemon {pid} outlived SIGKILL"
        await asyncio.sleep(0.02)
