"""NBD exports of volumes for guests on other hosts: one ``qemu-storage-daemon`` per export.

A guest on another compute host reaches a volume of this storage host over NBD.  Each export is
its own daemon that opens the volume's file with its format driver (qcow2 or raw) and serves the
volume's *data* as a raw, writable export named after the volume, on TCP at this host's address.

Why a daemon per export: in QEMU 7.2 a daemon has one NBD server, whose TLS credentials cover all
its exports, and ``tls-authz`` is ignored for PSK credentials (docs/spikes/nbd).  So the daemon's
``keys.psk`` is the access list, and only a daemon of its own keeps a key for one volume from
opening another.  Each export gets a fresh random 256-bit key, which the caller hands to the one
compute host that attaches the volume; without it the TLS handshake fails before any NBD option.

Layout under ``root`` (0700, as everything in it: the keys are secrets)::

    <volume_id>/export.json     the ``Export`` (written before the daemon starts)
    <volume_id>/keys.psk        ``identity:key``, the daemon's access list
    <volume_id>/dh-params.pem   fixed DH parameters: without them the daemon makes its own (up to 3 s)
    <volume_id>/qsd.pid         the daemon's pid, written by the daemon once it listens

Daemons are started with ``--daemonize`` (a new session, reparented away from us): they outlive
the agent that started them, and a new ``NbdExports`` finds them again in ``running()``.  A pid is
taken for our daemon only when ``/proc/<pid>/cmdline`` is a ``qemu-storage-daemon`` with this
export's pidfile, so a pid reused after a reboot is never signalled.  The caller serializes
operations on one volume id; this class serializes them too, per id, within one object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yunstack.errors import Conflict, DriverError, DriverUnavailable, ValidationFailed
from yunstack.tool import os_errors, run_tool
from yunstack.volume.backend import LocalDisk, check_id

IDENTITY = "yunstack"  # the default PSK identity: the key is what authenticates
START_TIMEOUT = 30.0  # --daemonize returns once the daemon listens (0.02 s with dh-params.pem)
STOP_TIMEOUT = 10.0  # SIGTERM: the daemon drains its requests and flushes the image first
KILL_TIMEOUT = 5.0
PORT_ATTEMPTS = 5  # a port we picked may be taken before the daemon binds it
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # no ':' (the key file's separator)
_IN_USE = "Address already in use"

# RFC 7919's ffdhe2048 group, as ``openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048``
# prints it: a well-known safe prime, so no daemon spends seconds generating parameters of its own.
FFDHE2048_PEM = """\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@dataclass(frozen=True, kw_only=True)
class Export:
    """One volume served over NBD; the caller stores it and hands the compute host what it needs.

    ``host``/``port`` is where the daemon listens, ``name`` the NBD export name (the volume id),
    ``psk_identity``/``psk_key`` (64 hex digits) the TLS-PSK credentials a client must present.
    ``path`` and ``format`` are the volume's file on this host as the daemon opened it.
    """

    volume_id: str
    host: str
    port: int
    name: str
    psk_identity: str
    psk_key: str = field(repr=False)  # a secret: kept out of logs
    path: Path
    format: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``export.json``; the caller may store it as it is)."""
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Export:
        return cls(**{**data, "port": int(data["port"]), "path": Path(data["path"])})


class NbdExports:
    """The NBD exports of this storage host, each a ``qemu-storage-daemon``, kept under ``root``."""

    def __init__(self, root: Path, binary: str = "qemu-storage-daemon") -> None:
        self._root = root
        self._binary = binary
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self, volume_id: str, local: LocalDisk, bind_host: str, *, port: int | None = None,
                    identity: str = IDENTITY) -> Export:
        """Serve the volume at ``local`` on ``bind_host`` (an IP address of this host) and ``port``
        (one that is free when None); return the export.

        An export of this volume that runs with the same file, address, identity (and ``port``,
        when given) is adopted and returned as it is.  One whose daemon is gone (a reboot) is started again
        with the same port and key when it can be, so the guest that held it reconnects.  One that
        runs otherwise raises ``Conflict`` (``stop`` it first).  On failure
        nothing of a new export stays.
        """
        check_id("volume", volume_id)
        _check_start(local, bind_host, port, identity)
        async with self._lock(volume_id):
            recorded = self._read(volume_id)
            if recorded is not None:
                same = (recorded.path == local.path and recorded.format == local.format and recorded.host == bind_host
                        and port in (None, recorded.port) and recorded.psk_identity == identity)
                if self._pid(volume_id) is not None:
                    if same:
                        return recorded
                    raise Conflict(detail=f"volume {volume_id} is exported already, from {recorded.path} "
                                          f"on {recorded.host}:{recorded.port}; stop that export first")
                if same:
                    with contextlib.suppress(DriverUnavailable):  # its port is taken now: a fresh one
                        self._write(recorded)  # whatever of its files a crash left half written
                        await self._launch(recorded)
                        return recorded
            await self._stop(volume_id)
            return await self._fresh(volume_id, local, bind_host, port, identity)

    async def stop(self, volume_id: str) -> None:
        """End the volume's export: the daemon exits (waited for) and its files go.  Absent: no error."""
        check_id("volume", volume_id)
        async with self._lock(volume_id):
            await self._stop(volume_id)

    async def running(self) -> dict[str, Export]:
        """The exports whose daemon runs, by volume id (after an agent restart: what to reconcile)."""
        return {e.volume_id: e for e in self._recorded() if self._pid(e.volume_id) is not None}

    async def stopped(self) -> dict[str, Export]:
        """The recorded exports whose daemon is gone (after a reboot): ``start`` them again or ``stop`` them."""
        return {e.volume_id: e for e in self._recorded() if self._pid(e.volume_id) is None}

    # ------------------------------------------------------------ files

    def _dir(self, volume_id: str) -> Path:
        return self._root / volume_id

    def _pidfile(self, volume_id: str) -> Path:
        return self._dir(volume_id) / "qsd.pid"

    def _read(self, volume_id: str) -> Export | None:
        """The recorded export; None when there is none or it is unreadable (a start cut short)."""
        try:
            export = Export.from_dict(json.loads((self._dir(volume_id) / "export.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return export if export.volume_id == volume_id else None

    def _recorded(self) -> Iterator[Export]:
        try:
            entries = sorted(self._root.iterdir())
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DriverError(detail=f"listing the NBD exports in {self._root}: {exc}") from exc
        for entry in entries:
            if entry.is_dir() and (export := self._read(entry.name)) is not None:
                yield export

    def _write(self, export: Export) -> None:
        """The export's directory, key file, DH parameters and record, each in place before the daemon starts."""
        folder = self._dir(export.volume_id)
        with os_errors(f"writing the NBD export of volume {export.volume_id}"):
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            _write_private(folder / "keys.psk", f"{export.psk_identity}:{export.psk_key}\n")
            _write_private(folder / "dh-params.pem", FFDHE2048_PEM)
            _write_private(folder / "export.json", json.dumps(export.to_dict(), indent=1, sort_keys=True))

    # ------------------------------------------------------------ the daemon

    async def _fresh(self, volume_id: str, local: LocalDisk, bind_host: str, port: int | None,
                     identity: str) -> Export:
        key = secrets.token_hex(32)
        assert local.path is not None  # _check_start
        for attempt in range(1 if port is not None else PORT_ATTEMPTS):
            export = Export(volume_id=volume_id, host=bind_host, port=port or _free_port(bind_host),
                            name=volume_id, psk_identity=identity, psk_key=key, path=local.path, format=local.format)
            try:
                self._write(export)
                await self._launch(export)
                return export
            except DriverUnavailable:
                await self._stop(volume_id)
                if port is not None or attempt == PORT_ATTEMPTS - 1:
                    raise
            except BaseException:
                await self._stop(volume_id)
                raise
        raise AssertionError("unreachable")

    async def _launch(self, export: Export) -> None:
        """Start the export's daemon; returns once it listens.  ``DriverUnavailable`` when its port is taken."""
        folder = self._dir(export.volume_id)
        self._pidfile(export.volume_id).unlink(missing_ok=True)
        file_driver = "host_device" if export.path.is_block_device() else "file"
        argv = [
            self._binary,
            "--object", _json({"qom-type": "tls-creds-psk", "id": "tls0", "endpoint": "server", "dir": str(folder)}),
            "--blockdev", _json({"driver": file_driver, "node-name": "file0", "filename": str(export.path),
                                 "discard": "unmap"}),
            "--blockdev", _json({"driver": export.format, "node-name": "vol0", "file": "file0", "discard": "unmap"}),
            "--nbd-server", _json({"addr": {"type": "inet", "host": export.host, "port": str(export.port)},
                                   "tls-creds": "tls0"}),
            "--export", _json({"type": "nbd", "id": "exp0", "node-name": "vol0", "name": export.name,
                               "writable": True}),
            "--pidfile", str(self._pidfile(export.volume_id)),
            "--daemonize",
        ]
        what = f"exporting volume {export.volume_id} on {export.host}:{export.port}"
        try:
            await run_tool(argv, what, START_TIMEOUT)
        except DriverError as exc:
            if _IN_USE in exc.text:
                raise DriverUnavailable(detail=exc.context.get("detail", exc.text)) from exc
            raise
        if self._pid(export.volume_id) is None:
            raise DriverError(detail=f"{what}: the daemon exited at once")

    def _pid(self, volume_id: str) -> int | None:
        """The pid of the volume's live daemon, or None (no pidfile, or its pid is not our daemon any more)."""
        pidfile = self._pidfile(volume_id)
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_daemon(pid, Path(self._binary).name, pidfile) else None

    async def _stop(self, volume_id: str) -> None:
        """Stop the daemon if it runs (SIGTERM, then SIGKILL), then remove the export's files."""
        pid = self._pid(volume_id)
        if pid is not None:
            for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, KILL_TIMEOUT)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if await self._gone(volume_id, timeout):
                    break
            else:
                raise DriverError(detail=f"the NBD export of volume {volume_id} (pid {pid}) did not exit")
        folder = self._dir(volume_id)
        with os_errors(f"removing the NBD export of volume {volume_id}"):
            # The record first: a removal cut short leaves no export that ``running`` could report.
            (folder / "export.json").unlink(missing_ok=True)
            if folder.exists():
                shutil.rmtree(folder)

    async def _gone(self, volume_id: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pid(volume_id) is not None:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _lock(self, volume_id: str) -> asyncio.Lock:
        return self._locks.setdefault(volume_id, asyncio.Lock())


def _check_start(local: LocalDisk, bind_host: str, port: int | None, identity: str) -> None:
    if local.format not in ("qcow2", "raw"):
        raise ValidationFailed(detail=f"an NBD export serves qcow2 or raw volumes, not {local.format!r}")
    if local.path is None or not local.path.is_absolute():
        raise ValidationFailed(detail=f"an NBD export needs the volume's absolute path, not {local.path}")
    try:
        ipaddress.ip_address(bind_host)
    except ValueError:
        raise ValidationFailed(detail=f"an NBD export listens on an IP address of this host, "
                                      f"not {bind_host!r}") from None
    if port is not None and (isinstance(port, bool) or not 1 <= port <= 65535):
        raise ValidationFailed(detail=f"an NBD export's port is 1..65535, not {port!r}")
    if not _IDENTITY.fullmatch(identity):
        raise ValidationFailed(detail=f"a PSK identity is letters, digits, '.', '_' or '-', not {identity!r}")


def _is_daemon(pid: int, binary: str, pidfile: Path) -> bool:
    """True when ``pid`` is a live ``binary`` started with ``pidfile`` (a pid can be reused by another process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    # A zombie has let go of the image and the port already: its parent (init) just has not reaped it.
    return (state not in ("Z", "X") and Path(os.fsdecode(cmdline[0])).name == binary
            and os.fsencode(str(pidfile)) in cmdline)


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` now (the daemon binds it a moment later: ``_fresh`` retries if lost)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise DriverError(detail=f"no TCP port for an NBD export on {host}: {exc}") from exc


def _json(value: dict[str, Any]) -> str:
    """A QEMU option as JSON: no ``key=value,...`` escaping of paths or names to get wrong."""
    return json.dumps(value, separators=(",", ":"))


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by us only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

