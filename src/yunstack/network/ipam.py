"""Address math for subnets (stdlib ``ipaddress`` only): CIDR, gateway and pool validation, candidates.

Nothing here touches the database.  Which candidate is really free is decided by the database's
UNIQUE (subnet_id, ip_address) constraint when the allocation row is inserted (see
``network/_common.py``); this module only proposes addresses in a stable order.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Collection, Iterator, Sequence

from yunstack.errors import BadRequest, Conflict
from yunstack.network.errors import InvalidInput

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class GatewayConflictWithAllocationPools(Conflict):
    """Raised when the gateway address lies inside an allocation pool (409, as in Neutron)."""

    message = "Gateway ip {ip_address} conflicts with allocation pool {pool}"


class OverlappingAllocationPools(BadRequest):
    """Raised when two allocation pools of one subnet share an address."""

    message = "Found overlapping allocation pools: {pool_1} {pool_2} for subnet {subnet_cidr}."


class OutOfBoundsAllocationPool(BadRequest):
    """Raised when an allocation pool reaches outside its subnet's usable range."""

    message = "The allocation pool {pool} spans beyond the subnet cidr {subnet_cidr}."


def address(value: str, what: str = "IP address") -> IPAddress:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError as e:
        raise InvalidInput(error_message=f"'{value}' is not a valid {what}") from e


def parse_cidr(cidr: str, ip_version: int) -> IPNetwork:
    """The subnet of ``cidr``; 400 for garbage, set host bits, a wrong family or no usable address."""
    text = cidr.strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise InvalidInput(error_message=f"'{cidr}' is not a valid IP subnet") from e
    if "/" not in text:
        raise InvalidInput(error_message=f"'{cidr}' is not a valid IP subnet")
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise InvalidInput(error_message=f"'{cidr}' isn't a recognized IP subnet cidr, '{net}' is recommended")
    if net.version != ip_version:
        raise InvalidInput(error_message=f"Cidr {cidr} does not match ip_version {ip_version}")
    if net.num_addresses < (4 if net.version == 4 else 2):
        raise InvalidInput(error_message=f"Subnet {cidr} has no usable addresses")
    return net


def first_host(net: IPNetwork) -> IPAddress:
    return net.network_address + 1


def last_host(net: IPNetwork) -> IPAddress:
    # IPv4 keeps the broadcast address out; IPv6 has none (Neutron's rule).
    return net.broadcast_address - 1 if net.version == 4 else net.broadcast_address


def _text(net: IPNetwork, value: int) -> str:
    return str(type(net.network_address)(value))


def default_pools(net: IPNetwork, gateway: str | None) -> list[tuple[str, str]]:
    """Every usable address, minus the gateway (which may split the range in two)."""
    lo, hi = int(first_host(net)), int(last_host(net))
    if gateway is None:
        return [(_text(net, lo), _text(net, hi))]
    gw = int(ipaddress.ip_address(gateway))
    if not lo <= gw <= hi:
        return [(_text(net, lo), _text(net, hi))]
    pools = []
    if gw > lo:
        pools.append((_text(net, lo), _text(net, gw - 1)))
    if gw < hi:
        pools.append((_text(net, gw + 1), _text(net, hi)))
    return pools


def check_gateway(net: IPNetwork, gateway: str) -> str:
    gw = address(gateway, "gateway IP")
    if gw.version != net.version:
        raise InvalidInput(error_message="Gateway IP version inconsistent with allocation pool version")
    if net.version == 4 and gw in (net.network_address, net.broadcast_address):
        raise InvalidInput(error_message=f"Gateway is not valid on subnet: {gateway}")
    return str(gw)


def check_pools(net: IPNetwork, pools: Sequence[tuple[str, str]], gateway: str | None) -> list[tuple[str, str]]:
    """Validate explicit pools: well formed, inside the usable range, disjoint, gateway outside."""
    parsed: list[tuple[int, int]] = []
    lo, hi = int(first_host(net)), int(last_host(net))
    for start, end in pools:
        a, b = address(start), address(end)
        if a.version != net.version or b.version != net.version:
            raise InvalidInput(error_message="Allocation pool IP version does not match the subnet")
        if int(a) > int(b):
            raise InvalidInput(error_message=f"Invalid allocation pool {start}-{end}: start is after end")
        if not (lo <= int(a) and int(b) <= hi):
            raise OutOfBoundsAllocationPool(pool=f"{start}-{end}", subnet_cidr=str(net))
        parsed.append((int(a), int(b)))
    ordered = sorted(parsed)
    for (a1, b1), (a2, b2) in itertools.pairwise(ordered):
        if a2 <= b1:
            raise OverlappingAllocationPools(pool_1=f"{_text(net, a1)}-{_text(net, b1)}",
                                             pool_2=f"{_text(net, a2)}-{_text(net, b2)}", subnet_cidr=str(net))
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for x, y in parsed:
            if x <= gw <= y:
                raise GatewayConflictWithAllocationPools(ip_address=gateway,
                                                         pool=f"{_text(net, x)}-{_text(net, y)}")
    return [(_text(net, x), _text(net, y)) for x, y in parsed]


def candidates(pools: Sequence[tuple[str, str]], used: Collection[str]) -> Iterator[str]:
    """Free-looking addresses in pool order; the database has the last word on each."""
    for start, end in pools:
        first = ipaddress.ip_address(start)
        kind = type(first)
        for value in range(int(first), int(ipaddress.ip_address(end)) + 1):
            text = str(kind(value))
            if text not in used:
                yield text


def overlaps(cidr_a: str, cidr_b: str) -> bool:
    a, b = ipaddress.ip_network(cidr_a), ipaddress.ip_network(cidr_b)
    return a.version == b.version and int(a.network_address) <= int(b.broadcast_address) \
        and int(b.network_address) <= int(a.broadcast_address)


def contains(cidr: str, ip: str) -> bool:
    net, addr = ipaddress.ip_network(cidr), ipaddress.ip_address(ip)
    return addr.version == net.version and addr in net


def prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def check_nameservers(values: Sequence[str]) -> list[str]:
    out = [str(address(v, "nameserver")) for v in values]
    for v in out:
        if out.count(v) > 1:
            raise InvalidInput(error_message=f"Duplicate nameserver '{v}'")
    return out


def check_host_routes(net: IPNetwork, routes: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for destination, nexthop in routes:
        try:
            dest = ipaddress.ip_network(destination)
        except ValueError as e:
            raise InvalidInput(error_message=f"'{destination}' is not a valid IP subnet") from e
        hop = address(nexthop, "nexthop")
        if dest.version != net.version or hop.version != net.version:
            raise InvalidInput(error_message="Host route IP version does not match the subnet")
        item = {"destination": str(dest), "nexthop": str(hop)}
        if item in out:
            raise InvalidInput(error_message=f"Duplicate hostroute '{destination}'")
        out.append(item)
    return out


def eui64(cidr: str, mac: str) -> str:
    """The address a guest makes from ``mac`` in the /64 ``cidr`` (RFC 4291 modified EUI-64)."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    iid = bytes([*octets[:3], 0xFF, 0xFE, *octets[3:]])
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Network(cidr).network_address) | int.from_bytes(iid, "big")))


def normalize_prefix(prefix: str, ethertype: str) -> str:
    """A security group rule's remote_ip_prefix, normalized, and checked against the ethertype."""
    try:
        net = ipaddress.ip_network(prefix.strip(), strict=False)
    except ValueError as e:
        raise InvalidInput(error_message=f"'{prefix}' is not a valid IP prefix") from e
    if f"IPv{net.version}" != ethertype:
        raise InvalidInput(error_message=f"Conflicting value ethertype {ethertype} for CIDR {prefix}")
    return str(net)
