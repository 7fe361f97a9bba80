"""The agent API remembers checked host credentials for a while, and forgets a host's at once."""

from __future__ import annotations

from yunstack.compute.hostauth import KnownCredentials


def test_a_remembered_credential_is_checked_again_after_a_while() -> None:
    """Another API process's revoke reaches this one once the remembered check is old."""
    known = KnownCredentials(seconds=0.0)
    known.remember("digest", "h1")
    assert known.host("digest") is None


def test_a_hosts_credentials_are_forgotten_at_once() -> None:
    known = KnownCredentials()
    known.remember("digest", "h1")
    known.remember("other", "h2")
    assert known.host("digest") == "h1"
    known.forget("h1")
    assert known.host("digest") is None
    assert known.host("other") == "h2"
