"""A thin async wrapper over ``qemu.qmp.QMPClient``: bounded connect and execute.

Each operation opens its own short session (connect, a few commands, disconnect), so a driver
restarted while guests run has nothing to re-establish.  QMP, OS and timeout errors become
``DriverError`` subclasses in ``translate_errors`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError
from qemu.qmp.qmp_client import NegotiationError

from yunstack.errors import DriverError, DriverUnavailable

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
# QEMU may send an event (a RESET, a STOP) between the capabilities handshake and its answer; qemu.qmp
# 0.0.6 takes the event for the answer and gives up on the session.  A new session does not meet
# the same event, so a failed handshake is tried again, a few times.
HANDSHAKE_TRIES = 3

# QMPClient logs every failed connect at ERROR; our errors say it better.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn QMP, OS and timeout errors raised inside into DriverError / DriverUnavailable.

    A command QEMU refused is permanent (``DriverError``); a socket that is gone, busy or silent
    is transient (``DriverUnavailable``).
    """
    try:
        yield
    except ExecuteError as exc:
        raise DriverError(detail=f"{what}: QEMU refused it ({exc.error_class}: {exc})") from exc
    except TimeoutError as exc:
        raise DriverUnavailable(detail=f"{what}: no answer from QMP in time") from exc
    except (QMPError, OSError, EOFError) as exc:
        raise DriverUnavailable(detail=f"{what}: {type(exc).__name__}: {exc}") from exc


class QmpSession:
    """One connected QMP session; use ``open_session`` to get one."""

    def __init__(self, client: QMPClient, label: str, timeout: float) -> None:
        self._client = client
        self._label = label
        self._timeout = timeout

    async def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one QMP command and return its ``return`` value."""
        with translate_errors(f"QMP {command} on {self._label}"):
            args = dict(arguments) if arguments is not None else None
            return await asyncio.wait_for(self._client.execute(command, args), timeout or self._timeout)

    @contextlib.contextmanager
    def events(self, name: str) -> Iterator[Events]:
        """Collect the events called ``name`` that QEMU sends while the block runs.

        Enter it before the command that causes them: an event sent before is not seen.
        """
        with self._client.listener(name) as listener:
            yield Events(listener)

    async def pass_fd(self, fd: int, name: str) -> None:
        """Hand an open file descriptor to QEMU under ``name`` (SCM_RIGHTS + ``getfd``)."""
        with translate_errors(f"passing fd {name} to {self._label}"):
            self._client.send_fd_scm(fd)
        await self.execute("getfd", {"fdname": name})


class Events:
    """The events one ``QmpSession.events`` block collects."""

    def __init__(self, listener: EventListener) -> None:
        self._listener = listener

    async def wait(self, match: Callable[[Mapping[str, Any]], bool], timeout: float) -> bool:
        """Wait for an event whose ``data`` ``match`` accepts: True, or False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(self._listener.get(), left)
            except TimeoutError:
                return False
            data = event.get("data")
            if isinstance(data, Mapping) and match(data):
                return True
        return False


@contextlib.asynccontextmanager
async def open_session(
    socket_path: Path, label: str, *, connect_timeout: float = CONNECT_TIMEOUT,
    timeout: float = COMMAND_TIMEOUT,
) -> AsyncIterator[QmpSession]:
    """Connect to the QMP socket within ``connect_timeout`` and yield a session."""
    client = await _connect(socket_path, label, connect_timeout)
    try:
        yield QmpSession(client, label, timeout)
    finally:
        # The peer may already be gone (after "quit"); a failed goodbye changes nothing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), connect_timeout)


async def _connect(socket_path: Path, label: str, connect_timeout: float) -> QMPClient:
    tries = HANDSHAKE_TRIES
    while True:
        client = QMPClient(label)
        with translate_errors(f"connecting to QMP of {label} at {socket_path}"):
            try:
                await asyncio.wait_for(client.connect(str(socket_path)), connect_timeout)
                return client
            except ConnectError as exc:
                tries -= 1
                if tries == 0 or not isinstance(exc.exc, NegotiationError):
                    raise


async def wait_for_qmp(socket_path: Path, label: str, deadline: float) -> None:
    """Poll until QMP answers ``query-status`` or the loop time passes ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with open_session(socket_path, label, connect_timeout=1.0) as qmp:
                await qmp.execute("query-status")
                return
        except DriverUnavailable:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.05)
