"""``HttpControlPlane``: the agent's ``ControlPlane`` over ``/agent/v1`` (httpx, one connection pool).

Arguments and results go through ``agent.wire``, so this class spells out no field: each protocol
method is one POST.  Errors come back as the control plane's fault bodies and are raised again as
the same kind of ``YunError`` (a 404 is ``NotFound``, a 409 ``Conflict``), which is what the agent
already handles from the in-process link.  ``join`` spends a join token for the host's credential;
``load_credential``/``save_credential`` keep it (0600) in the agent's state directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from yunstack.agent.link import Answer, ConsoleSocket, Outcome, SpecData, Wakeup, Work
from yunstack.agent.wire import METHODS, PREFIX
from yunstack.compute.driver import HostInfo, InstanceInfo
from yunstack.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, YunError
from yunstack.network.desired import HostNetworkState

CREDENTIAL_FILE = "agent-credential.json"
_ERRORS: dict[int, type[YunError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                      409: Conflict}
# Reads wait at most this long for an answer: longer than any long-poll (the server caps them at 30 s).
READ_TIMEOUT = 60.0


class AgentLinkError(YunError):
    """The control plane could not be reached, or answered with a server error."""

    status = 503
    message = "The control plane is unavailable: {why}"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = str(next(iter(body.values()))["message"])
    except (ValueError, KeyError, TypeError, StopIteration):
        message = response.text[:300] or response.reason_phrase
    kind = _ERRORS.get(response.status_code)
    if kind is None:
        raise AgentLinkError(why=f"{response.status_code} {message}")
    raise kind(message)


def join(control: str, token: str, *, client: httpx.Client | None = None) -> tuple[str, str]:
    """Spend ``token`` at the control plane: (host name, credential)."""
    http = client or httpx.Client(base_url=control, timeout=30.0)
    try:
        response = http.post(f"{PREFIX}/join", json={"join_token": token})
        _raise_for(response)
        body = response.json()
        return str(body["host"]), str(body["credential"])
    finally:
        if client is None:
            http.close()


def save_credential(state_dir: Path, control: str, host: str, credential: str) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CREDENTIAL_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"control": control, "host": host, "credential": credential}, fh)
    os.chmod(path, 0o600)  # also when the file was there before with looser bits
    return path


def load_credential(state_dir: Path) -> tuple[str, str, str] | None:
    """(control URL, host, credential) saved by an earlier join, or None."""
    path = state_dir / CREDENTIAL_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return str(data["control"]), str(data["host"]), str(data["credential"])


# Dials a websocket: (path on the control plane, headers) -> the open socket.
Dialer = Callable[[str, Mapping[str, str]], ConsoleSocket]


class WebsocketConsole:
    """A ``ConsoleSocket`` over a websockets (sync) client connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn

    def send(self, data: bytes) -> None:
        self._conn.send(data)

    def recv(self) -> bytes | None:
        try:
            message = self._conn.recv()
        except ConnectionClosed:
            return None
        return message if isinstance(message, bytes) else message.encode()

    def close(self) -> None:
        self._conn.close()


def websocket_dialer(control: str) -> Dialer:
    base = "ws" + control.removeprefix("http")  # http -> ws, https -> wss

    def dial(path: str, headers: Mapping[str, str]) -> ConsoleSocket:
        try:
            return WebsocketConsole(ws_connect(base + path, additional_headers=dict(headers), open_timeout=10))
        except (OSError, WebSocketException) as exc:
            raise AgentLinkError(why=f"console relay: {type(exc).__name__}: {exc}") from exc

    return dial


class HttpControlPlane:
    def __init__(self, control: str, host: str, credential: str, *, client: httpx.Client | None = None,
                 timeout: float = READ_TIMEOUT, dial: Dialer | None = None) -> None:
        self.host = host
        self._http = client or httpx.Client(base_url=control, timeout=httpx.Timeout(timeout, connect=10.0))
        self._http.headers["Authorization"] = f"Bearer {credential}"
        self._base = f"{PREFIX}/hosts/{host}"
        self._dial = dial or websocket_dialer(control)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, **args: object) -> Any:
        spec = METHODS[method]
        try:
            response = self._http.post(f"{self._base}/calls/{method}", content=spec.encode_args(args),
                                       headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise AgentLinkError(why=f"{type(exc).__name__}: {exc}") from exc
        _raise_for(response)
        return spec.decode_result(response.content)

    # -- the protocol ----------------------------------------------------------------------------

    def pending_work(self, host: str) -> Sequence[Work]:
        result: Sequence[Work] = self._call("pending_work", host=host)
        return result

    def wait(self, host: str, busy: Collection[str], timeout: float, owner: str = "") -> Wakeup:
        result: Wakeup = self._call("wait", host=host, busy=sorted(busy), timeout=timeout, owner=owner)
        return result

    def answer(self, host: str, answer: Answer) -> None:
        self._call("answer", host=host, answer=answer)

    def open_console(self, session: str) -> ConsoleSocket:
        return self._dial(f"{self._base}/consoles/{session}",
                          {"Authorization": self._http.headers["Authorization"]})

    def spec(self, instance_id: str) -> SpecData:
        result: SpecData = self._call("spec", instance_id=instance_id)
        return result

    def finish(self, outcome: Outcome) -> None:
        self._call("finish", outcome=outcome)

    def progress(self, instance_id: str, request_id: str, task_state: str) -> None:
        self._call("progress", instance_id=instance_id, request_id=request_id, task_state=task_state)

    def sync_power(self, host: str, infos: Sequence[InstanceInfo], busy: Collection[str]) -> Sequence[str]:
        result: Sequence[str] = self._call("sync_power", host=host, infos=list(infos), busy=sorted(busy))
        return result

    def heartbeat(self, host: str, info: HostInfo) -> None:
        self._call("heartbeat", host=host, info=info)

    def network_state(self, host: str, tunnel_ip: str = "") -> HostNetworkState:
        result: HostNetworkState = self._call("network_state", host=host, tunnel_ip=tunnel_ip)
        return result

    def report_memory(self, host: str, entry: Mapping[str, Any]) -> None:
        self._call("report_memory", host=host, entry=entry)

    # -- the two that move files -----------------------------------------------------------------

    def fetch_image(self, image_id: str, dest: Path) -> str:
        try:
            with self._http.stream("GET", f"{self._base}/images/{image_id}") as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                with dest.open("wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
                return str(response.headers.get("X-Disk-Format", "raw"))
        except httpx.HTTPError as exc:
            raise AgentLinkError(why=f"{type(exc).__name__}: {exc}") from exc

    def upload_snapshot(self, instance_id: str, image_id: str, path: Path) -> None:
        def chunks() -> Any:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk

        try:
            response = self._http.put(f"{self._base}/instances/{instance_id}/snapshots/{image_id}",
                                      content=chunks(), headers={"Content-Type": "application/octet-stream"})
        except httpx.HTTPError as exc:
            raise AgentLinkError(why=f"{type(exc).__name__}: {exc}") from exc
        _raise_for(response)
