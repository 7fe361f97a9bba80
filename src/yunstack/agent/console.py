"""The host's end of a serial console relay: the guest's serial socket <-> a websocket to the control plane.

Two daemon threads carry bytes, one each way, because both ends are blocking sockets; when either
end closes, both do.  The control plane pairs the websocket with the user's (``api/console_relay.py``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from yunstack.agent.link import ConsoleSocket

log = logging.getLogger(__name__)


class ConsoleRelay:
    def __init__(self, guest: socket.socket, end: ConsoleSocket, closed: Callable[[ConsoleRelay], None]) -> None:
        self._guest = guest
        self._end = end
        self._closed = closed
        self._once = threading.Lock()
        self._done = False

    def start(self) -> None:
        for target, name in ((self._up, "console-up"), (self._down, "console-down")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _up(self) -> None:
        """Guest output to the user."""
        with contextlib.suppress(Exception):
            while data := self._guest.recv(4096):
                self._end.send(data)
        self.close()

    def _down(self) -> None:
        """The user's keystrokes to the guest."""
        with contextlib.suppress(Exception):
            while (data := self._end.recv()) is not None:
                self._guest.sendall(data)
        self.close()

    def close(self) -> None:
        with self._once:
            if self._done:
                return
            self._done = True
        with contextlib.suppress(OSError):
            self._guest.shutdown(socket.SHUT_RDWR)
        self._guest.close()
        with contextlib.suppress(Exception):
            self._end.close()
        self._closed(self)


def open_relay(path: str, dial: Callable[[], ConsoleSocket], closed: Callable[[ConsoleRelay], None]) -> ConsoleRelay:
    """Connect the guest's serial socket at ``path`` to a freshly dialled relay end, and start carrying."""
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        guest.connect(path)
        end = dial()
    except BaseException:
        guest.close()
        raise
    relay = ConsoleRelay(guest, end, closed)
    relay.start()
    return relay
