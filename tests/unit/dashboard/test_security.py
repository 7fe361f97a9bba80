"""Which Accept headers get the dashboard at ``/``, and the CSRF comparison."""

from __future__ import annotations

import pytest

from yunstack.dashboard.security import accepts_gzip, csrf_ok, prefers_html


@pytest.mark.parametrize("accept", [
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",  # Chromium
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # Firefox
    "text/html",
])
def test_browsers_get_the_dashboard(accept: str) -> None:
    assert prefers_html(accept)


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "application/json, text/html",
                                    "text/html;q=0.5, application/json", "text/html;q=0, */*", "text/*",
                                    "text/html;q=nonsense"])
def test_api_clients_and_ties_get_json(accept: str | None) -> None:
    assert not prefers_html(accept)


def test_csrf_takes_the_header_or_the_field_and_never_an_empty_token() -> None:
    assert csrf_ok("abc", "abc", None) and csrf_ok("abc", None, "abc")
    assert not csrf_ok("abc", None, None) and not csrf_ok("abc", "abd", None)
    assert not csrf_ok("", "", "")
    assert not csrf_ok("abc", "abc", "wrong")  # a header, when sent, is the one checked


@pytest.mark.parametrize(("accept_encoding", "gzip"), [
    ("gzip, deflate, br, zstd", True),  # Chromium
    ("gzip, deflate", True),  # httpx, curl --compressed
    ("GZIP", True), ("*", True), ("br;q=1, *;q=0.1", True),
    (None, False), ("", False), ("identity", False), ("gzip;q=0, deflate", False), ("*;q=0", False),
    ("gzip;q=0, *", False),  # named and refused: the wildcard does not bring it back
])
def test_static_files_go_gzipped_only_to_clients_that_accept_gzip(accept_encoding: str | None, gzip: bool) -> None:
    assert accepts_gzip(accept_encoding) is gzip
