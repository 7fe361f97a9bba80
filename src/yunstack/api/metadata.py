"""The metadata service's API side, mounted at ``/metadata`` (no Keystone token: see below).

Only metadata proxies call it (``network/dataplane/metadata_proxy.py``).  Instead of a token, each
request carries the network id and source address the proxy saw, signed with the shared secret
(``STATE_DIR/network/metadata_secret``); ``lookup(network_id, address)`` resolves them to the
one instance that owns the address, and that instance's data is the only thing it can get.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response

from yunstack.network.dataplane.metadata_api import (
    ADDRESS_HEADER,
    NETWORK_HEADER,
    SIGNATURE_HEADER,
    InstanceMetadata,
    respond,
    verify,
)

Lookup = Callable[[str, str], "InstanceMetadata | None"]


def make_metadata_router(lookup: Lookup, secret: bytes, *, prefix: str = "/metadata") -> APIRouter:
    """A router answering ``GET|HEAD {prefix}/<instance path>`` for signed proxy requests.

    ``lookup`` may block (it reads the database); it runs in the thread pool.  403 when the
    signature is missing or wrong, 404 when no instance owns the address or the path is unknown.
    """
    router = APIRouter(prefix=prefix, include_in_schema=False)

    @router.api_route("/{path:path}", methods=["GET", "HEAD"])
    def metadata(path: str, request: Request) -> Response:
        network_id = request.headers.get(NETWORK_HEADER, "")
        address = request.headers.get(ADDRESS_HEADER, "")
        if not verify(secret, network_id, address, request.headers.get(SIGNATURE_HEADER, "")):
            return Response(b"Forbidden\n", status_code=403, media_type="text/plain")
        md = lookup(network_id, address)
        if md is None:
            return Response(b"Not Found\n", status_code=404, media_type="text/plain")
        answer = respond("/" + path, md)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    return router
