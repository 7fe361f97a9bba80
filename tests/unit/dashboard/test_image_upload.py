"""The client's image upload sends its chunks as they come: the file is never held whole."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from yunstack.client import YunClient
from yunstack.client.images import upload_image_data

CATALOG = [{"type": "image", "endpoints": [{"interface": "public", "url": "http://cloud/image"}]}]


def test_the_upload_sends_each_chunk_before_the_next_is_read() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            pulled.append(i)
            yield bytes([i]) * 10

    sent: list[tuple[bytes, int]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/identity/v3/auth/tokens":
            return httpx.Response(201, headers={"X-Subject-Token": "t"}, json={"token": {"catalog": CATALOG}})
        if request.method == "PUT":
            assert request.headers["content-length"] == "30" and "transfer-encoding" not in request.headers
            assert isinstance(request.stream, httpx.SyncByteStream)
            sent.extend((chunk, len(pulled)) for chunk in request.stream)
            return httpx.Response(204)
        return httpx.Response(200, json={"id": "i", "name": "disk", "status": "active", "size": 30})

    class Transport(httpx.BaseTransport):  # not MockTransport: that reads the whole body first
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return handle(request)

    client = YunClient("http://cloud", transport=Transport())
    client.issue_token({})
    image = upload_image_data(client, "i", chunks(), size=30)
    assert sent == [(b"\0" * 10, 1), (b"\1" * 10, 2), (b"\2" * 10, 3)]
    assert image.status == "active" and image.size == 30
