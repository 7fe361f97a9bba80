"""The body of ``PUT /servers/{id}`` and the access addresses' wire checks.

Up to microversion 2.74 Nova answers an update with a reduced server view: no extended
attributes (``OS-EXT-*``, ``OS-SRV-USG:*``), no ``key_name``, ``config_drive``, availability zone,
security groups or volumes, and addresses without their type and MAC; ``progress`` only while
the status is one that makes progress, ``fault`` only in ERROR/DELETED.  (2.75 made it "same as
show"; we serve up to 2.47.)
"""

from __future__ import annotations

from typing import Any

from yunstack.api.compute import server_views as views
from yunstack.api.compute.microversion import APIVersion
from yunstack.compute import addressing
from yunstack.compute.models import Server
from yunstack.identity.context import AuthContext

Json = dict[str, Any]
_FAULT = ("ERROR", "DELETED")
_HIDDEN_PREFIXES = ("OS-EXT-", "OS-SRV-USG:", "os-extended-volumes:")
_HIDDEN = ("key_name", "config_drive", "security_groups", "host_status", "progress", "fault")


def access_addresses(ipv4: str | None, ipv6: str | None) -> tuple[str | None, str | None]:
    """Validated access addresses (400 when not an address), IPv6 compressed; None stays None."""
    return (addressing.access_ipv4(ipv4) if ipv4 is not None else None,
            addressing.access_ipv6(ipv6) if ipv6 is not None else None)


def updated(base: str, s: Server, v: APIVersion, ctx: AuthContext) -> Json:
    full = views.detail(base, s, v, ctx)
    body = {k: val for k, val in full.items() if not k.startswith(_HIDDEN_PREFIXES) and k not in _HIDDEN}
    body["addresses"] = {net: [{"version": a["version"], "addr": a["addr"]} for a in items]
                         for net, items in s.addresses.items()}
    if s.status in views.PROGRESS_STATUSES:
        body["progress"] = s.progress
    if s.status in _FAULT and "fault" in full:
        body["fault"] = full["fault"]
    return body
