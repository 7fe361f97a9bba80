"""Access addresses and the ``ip``/``ip6`` server list filters, as Nova validates and matches them.

Nova matches ``ip`` and ``ip6`` as regular expressions (``re.match``) against the fixed addresses.
A user-supplied regex can take exponential time, so we do not compile it: the pattern is read as
Nova's common uses read it (an address or its prefix; ``.`` and ``\\.`` both mean a dot; ``^`` and
a trailing ``$`` anchor) and matched in linear time.  Other regex syntax is refused with a 400.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from yunstack.errors import BadRequest

_ALLOWED = set("0123456789abcdefABCDEF.:")


def access_ipv4(value: str) -> str:
    """A valid IPv4 access address (400 otherwise)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise BadRequest("Invalid input for field/attribute accessIPv4. Value: {v}. '{v}' is not a "
                         "'ipv4'", v=value) from None


def access_ipv6(value: str) -> str:
    """A valid IPv6 access address in its compressed form (400 otherwise)."""
    try:
        return ipaddress.IPv6Address(value).compressed
    except ValueError:
        raise BadRequest("Invalid input for field/attribute accessIPv6. Value: {v}. '{v}' is not a "
                         "'ipv6'", v=value) from None


def address_matcher(pattern: str, name: str) -> tuple[str, bool]:
    """(prefix, exact) from an ``ip``/``ip6`` filter value; 400 on regex syntax we do not read."""
    text = pattern[1:] if pattern.startswith("^") else pattern
    exact = text.endswith("$") and not text.endswith("\\$")
    if exact:
        text = text[:-1]
    text = text.replace("\\.", ".")
    if not text or not set(text) <= _ALLOWED:
        raise BadRequest("Invalid {name} filter {p!r}: give an address or its prefix.", name=name, p=pattern)
    return text.lower(), exact


def matches(pattern: str, name: str, addresses: Iterable[str]) -> bool:
    prefix, exact = address_matcher(pattern, name)
    for address in addresses:
        candidate = address.lower()
        if candidate == prefix if exact else candidate.startswith(prefix):
            return True
    return False
