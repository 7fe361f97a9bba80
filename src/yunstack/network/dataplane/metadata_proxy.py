"""The metadata proxy: one small asyncio HTTP server per router or isolated network.

Started by the dataplane as ``python -m yunstack.network.dataplane.metadata_proxy --netns NS
--network CIDR=NETWORK_ID ... --upstream http://127.0.0.1:PORT/metadata --secret-file FILE``.

It runs in the *host* network namespace and only its listening socket lives in ``NS``: the
process enters ``NS`` (``setns``) just long enough to bind ``169.254.169.254:80`` and goes back.
That way the upstream, the API on the host's loopback, stays reachable; a process started with
``ip netns exec`` would see the namespace's own, empty loopback.  For each request it takes the
peer's address, finds the network whose CIDR holds it, and forwards ``GET``/``HEAD`` upstream with
the signed (network id, address) headers of ``metadata_api``; nothing the instance sends besides
the method and path reaches the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import sys
from urllib.parse import urlsplit

from yunstack.network.dataplane.metadata_api import (
    ADDRESS_HEADER,
    NETWORK_HEADER,
    SIGNATURE_HEADER,
    sign,
)

log = logging.getLogger("yunstack.metadata_proxy")

CLONE_NEWNET = 0x40000000
MAX_HEAD = 8192
MAX_BODY = 4 << 20  # user_data is at most 64 KiB in Nova; leave room
TIMEOUT = 10.0


def bind_in_netns(netns: str | None, host: str, port: int) -> socket.socket:
    """A listening TCP socket in ``netns`` (the caller's own namespace when ``None``)."""
    if netns is None:
        return _listen(host, port)
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
        try:
            return _listen(host, port)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                os._exit(70)  # never serve upstream requests from the wrong namespace
    finally:
        os.close(own)
        os.close(target)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


class Proxy:
    def __init__(self, networks: dict[str, str], upstream: str, secret: bytes) -> None:
        self.networks = [(ipaddress.ip_network(cidr, strict=False), nid) for cidr, nid in networks.items()]
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.base = url.path.rstrip("/")
        self.secret = secret

    def network_of(self, address: str) -> str | None:
        ip = ipaddress.ip_address(address)
        for net, nid in self.networks:
            if ip in net:
                return nid
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._serve(reader, writer), TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("metadata request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (UnicodeDecodeError, ValueError):
            return await _reply(writer, 400, "Bad Request")
        if method not in ("GET", "HEAD"):
            return await _reply(writer, 405, "Method Not Allowed")
        path = target.split("?", 1)[0]
        if not path.startswith("/") or any(c in path for c in " \r\n\t") or ".." in path:
            return await _reply(writer, 400, "Bad Request")
        network_id = self.network_of(peer)
        if network_id is None:
            return await _reply(writer, 404, "Not Found")
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return await _reply(writer, 502, "Bad Gateway")
        try:
            up_writer.write(
                f"{method} {self.base}{path} HTTP/1.0\r\nHost: {self.host}:{self.port}\r\n"
                f"{NETWORK_HEADER}: {network_id}\r\n{ADDRESS_HEADER}: {peer}\r\n"
                f"{SIGNATURE_HEADER}: {sign(self.secret, network_id, peer)}\r\n"
                "Connection: close\r\n\r\n".encode())
            await up_writer.drain()
            # Relay until the upstream closes (HTTP/1.0): headers and body come in separate writes.
            relayed = 0
            while chunk := await up_reader.read(65536):
                relayed += len(chunk)
                if relayed > MAX_BODY:
                    break
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()


async def _reply(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"{reason}\n".encode()
    writer.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()


async def serve(sock: socket.socket, proxy: Proxy) -> None:
    server = await asyncio.start_server(proxy.handle, sock=sock, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yunstack-metadata-proxy")
    parser.add_argument("--netns", help="namespace to listen in (default: this one)")
    parser.add_argument("--listen", default="169.254.169.254")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--network", action="append", default=[], metavar="CIDR=NETWORK_ID",
                        help="a subnet this proxy serves and its network id (repeatable)")
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT/metadata")
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--state-marker", default="", help="ignored; lets the agent find us")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    networks = dict(item.split("=", 1) for item in args.network)
    with open(args.secret_file, "rb") as fh:
        secret = fh.read().strip()
    proxy = Proxy(networks, args.upstream, secret)
    sock = bind_in_netns(args.netns, args.listen, args.port)
    log.info("serving %s:%d in %s for %s", args.listen, args.port, args.netns or "this namespace",
             ", ".join(f"{c}={n}" for c, n in networks.items()))
    asyncio.run(serve(sock, proxy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
