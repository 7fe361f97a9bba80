"""Subnet pools (Neutron's ``subnet_allocation`` extension): prefixes that subnets are carved from.

A pool holds prefixes of one IP version and the bounds of the subnets cut from it
(``min_prefixlen`` <= ``default_prefixlen`` <= ``max_prefixlen``).  A subnet created with
``subnetpool_id`` either names its ``cidr`` (which must lie inside the pool and not overlap the
pool's other subnets) or only a ``prefixlen`` (default: the pool's), and gets the first free block
of that size.  Allocation writes the pool row first, so two concurrent allocations from one pool
are serialized by the database (row lock on PostgreSQL, the write lock on SQLite) and never get
the same block.  Address scopes are not implemented.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from yunstack.db.tables import network as t
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import ipam
from yunstack.network import models as m
from yunstack.network.errors import InvalidInput, PolicyNotAuthorized, SubnetPoolInUse, SubnetPoolNotFound

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_PREFIXLEN = {4: 8, 6: 64}  # Neutron's defaults for min_prefixlen
MAX_PREFIXLEN = {4: 32, 6: 128}


def pool_of(r: t.SubnetPool) -> m.SubnetPool:
    return m.SubnetPool(id=r.id, project_id=r.project_id, description=r.description or "",
                        tags=tuple(r.tags or ()), revision_number=r.revision_number, created_at=r.created_at,
                        updated_at=r.updated_at, name=r.name, ip_version=r.ip_version,
                        prefixes=tuple(r.prefixes), default_prefixlen=r.default_prefixlen,
                        min_prefixlen=r.min_prefixlen, max_prefixlen=r.max_prefixlen, shared=r.shared,
                        is_default=r.is_default)


def _prefixes(values: Sequence[str]) -> list[Net]:
    if not values:
        raise InvalidInput(error_message="prefixes: a subnet pool needs at least one prefix")
    nets: list[Net] = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip()))
        except ValueError as e:
            raise InvalidInput(error_message=f"prefixes: '{value}' is not a valid CIDR without host bits") from e
    if len({n.version for n in nets}) != 1:
        raise InvalidInput(error_message="prefixes: all prefixes of a pool must be of one IP version")
    return nets


def _collapse(nets: Sequence[Net]) -> list[str]:
    """Merged prefixes (adjacent and nested ones joined), as Neutron stores them."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return [str(n) for n in ipaddress.collapse_addresses(v4)] + [str(n) for n in ipaddress.collapse_addresses(v6)]


def _bounds(version: int, default: int | None, low: int | None, high: int | None) -> tuple[int, int, int]:
    low = MIN_PREFIXLEN[version] if low is None else low
    high = MAX_PREFIXLEN[version] if high is None else high
    default = low if default is None else default
    for name, value in (("min_prefixlen", low), ("max_prefixlen", high), ("default_prefixlen", default)):
        if not 0 <= value <= MAX_PREFIXLEN[version]:
            raise InvalidInput(error_message=f"{name} {value} is not in [0, {MAX_PREFIXLEN[version]}]")
    if not low <= default <= high:
        raise InvalidInput(error_message=f"Illegal prefix bounds: min_prefixlen={low}, "
                           f"default_prefixlen={default}, max_prefixlen={high}")
    return default, low, high


def _free_block(pool: t.SubnetPool, taken: Sequence[str], prefixlen: int) -> Net | None:
    """The first block of ``prefixlen`` inside the pool that overlaps no subnet of the pool."""
    used = [ipaddress.ip_network(x) for x in taken]
    for prefix in (ipaddress.ip_network(p) for p in pool.prefixes):
        if prefix.prefixlen > prefixlen:
            continue
        for block in prefix.subnets(new_prefix=prefixlen):
            clash = next((u for u in used if ipam.overlaps(str(u), str(block))), None)
            if clash is None:
                return block
    return None


class SubnetPoolOps(c.Base):
    def _pool_row(self, s: Session, ctx: AuthContext, pool_id: str) -> t.SubnetPool:
        row = s.get(t.SubnetPool, pool_id)
        if row is None or not (c.owns(ctx, row.project_id) or row.shared):
            raise SubnetPoolNotFound(id=pool_id)
        return row

    @staticmethod
    def _check_default(s: Session, row: t.SubnetPool) -> None:
        if row.is_default and s.scalar(select(t.SubnetPool.id).where(
                t.SubnetPool.is_default.is_(True), t.SubnetPool.ip_version == row.ip_version,
                t.SubnetPool.id != row.id).limit(1)) is not None:
            raise InvalidInput(error_message=f"A default subnetpool for IPv{row.ip_version} has already been set")

    def create_subnetpool(self, ctx: AuthContext, *, name: str = "", prefixes: Sequence[str] = (),
                          default_prefixlen: int | None = None, min_prefixlen: int | None = None,
                          max_prefixlen: int | None = None, shared: bool = False, is_default: bool = False,
                          description: str = "", project_id: str | None = None) -> m.SubnetPool:
        """A pool; ``shared`` and ``is_default`` are admin-only, as in Neutron."""
        c.require_write(ctx, "create_subnetpool")
        if shared:
            c.require_admin(ctx, "create_subnetpool:shared")
        if is_default:
            c.require_admin(ctx, "create_subnetpool:is_default")
        nets = _prefixes(prefixes)
        version = nets[0].version
        default, low, high = _bounds(version, default_prefixlen, min_prefixlen, max_prefixlen)
        project = c.owner(ctx, project_id)
        with self._db.begin() as s:
            row = t.SubnetPool(**c.stamp(), name=name, project_id=project, ip_version=version,
                               prefixes=_collapse(nets), default_prefixlen=default, min_prefixlen=low,
                               max_prefixlen=high, shared=shared, is_default=is_default, description=description,
                               tags=[])
            self._check_default(s, row)
            s.add(row)
            s.flush()
            return pool_of(row)

    def list_subnetpools(self, ctx: AuthContext) -> list[m.SubnetPool]:
        q = select(t.SubnetPool).order_by(t.SubnetPool.created_at, t.SubnetPool.id)
        if not ctx.is_admin:
            q = q.where(or_(t.SubnetPool.project_id == ctx.project_id, t.SubnetPool.shared.is_(True)))
        with self._db() as s:
            return [pool_of(r) for r in s.scalars(q)]

    def get_subnetpool(self, ctx: AuthContext, pool_id: str) -> m.SubnetPool:
        with self._db() as s:
            return pool_of(self._pool_row(s, ctx, pool_id))

    def update_subnetpool(self, ctx: AuthContext, pool_id: str, *, name: str | None = None,
                          description: str | None = None, prefixes: Sequence[str] | None = None,
                          default_prefixlen: int | None = None, min_prefixlen: int | None = None,
                          max_prefixlen: int | None = None, is_default: bool | None = None) -> m.SubnetPool:
        """Prefixes may only grow (every old prefix must stay covered), as in Neutron."""
        c.require_write(ctx, "update_subnetpool")
        with self._db.begin() as s:
            row = self._pool_row(s, ctx, pool_id)
            if not c.owns(ctx, row.project_id):
                raise PolicyNotAuthorized(action="update_subnetpool")
            if prefixes is not None:
                nets = _prefixes(prefixes)
                if nets[0].version != row.ip_version:
                    raise InvalidInput(error_message="prefixes: the IP version of a pool cannot change")
                merged = [ipaddress.ip_network(x) for x in _collapse(nets)]
                for old in (ipaddress.ip_network(p) for p in row.prefixes):
                    if not any(old.subnet_of(n) for n in merged):  # type: ignore[arg-type]
                        raise InvalidInput(error_message=f"prefixes: existing prefix {old} may not be removed "
                                           "from the subnet pool")
                row.prefixes = [str(n) for n in merged]
            if (default_prefixlen, min_prefixlen, max_prefixlen) != (None, None, None):
                row.default_prefixlen, row.min_prefixlen, row.max_prefixlen = _bounds(
                    row.ip_version, row.default_prefixlen if default_prefixlen is None else default_prefixlen,
                    row.min_prefixlen if min_prefixlen is None else min_prefixlen,
                    row.max_prefixlen if max_prefixlen is None else max_prefixlen)
            if is_default is not None and is_default != row.is_default:
                c.require_admin(ctx, "update_subnetpool:is_default")
                row.is_default = is_default
                self._check_default(s, row)
            if name is not None:
                row.name = name
            if description is not None:
                row.description = description
            c.touch(row)
            s.flush()
            return pool_of(row)

    def delete_subnetpool(self, ctx: AuthContext, pool_id: str) -> None:
        c.require_write(ctx, "delete_subnetpool")
        with self._db.begin() as s:
            row = self._pool_row(s, ctx, pool_id)
            if not c.owns(ctx, row.project_id):
                raise PolicyNotAuthorized(action="delete_subnetpool")
            if s.scalar(select(t.Subnet.id).where(t.Subnet.subnetpool_id == row.id).limit(1)) is not None:
                raise SubnetPoolInUse(subnet_pool_id=row.id)
            s.delete(row)

    def _allocate_cidr(self, s: Session, ctx: AuthContext, pool_id: str, cidr: str | None, prefixlen: int | None,
                       ip_version: int) -> str:
        """The subnet's CIDR from the pool: ``cidr`` checked against it, or the next free block."""
        pool = self._pool_row(s, ctx, pool_id)
        if pool.ip_version != ip_version:
            raise InvalidInput(error_message=f"ip_version {ip_version} does not match the subnet pool's "
                               f"(IPv{pool.ip_version})")
        c.touch(pool)  # the write that serializes allocations from this pool
        s.flush()
        taken = list(s.scalars(select(t.Subnet.cidr).where(t.Subnet.subnetpool_id == pool.id)))
        if cidr is not None:
            net = ipam.parse_cidr(cidr, ip_version)
            if not pool.min_prefixlen <= net.prefixlen <= pool.max_prefixlen:
                raise InvalidInput(error_message=f"Prefix length {net.prefixlen} of {net} is outside the subnet "
                                   f"pool's bounds [{pool.min_prefixlen}, {pool.max_prefixlen}]")
            if not any(net.subnet_of(ipaddress.ip_network(p)) for p in pool.prefixes):  # type: ignore[arg-type]
                raise InvalidInput(error_message=f"Cidr {net} is not within the prefixes of subnet pool {pool.id}")
            if any(ipam.overlaps(other, str(net)) for other in taken):
                raise InvalidInput(error_message=f"Cidr {net} overlaps a subnet already allocated from subnet "
                                   f"pool {pool.id}")
            return str(net)
        length = pool.default_prefixlen if prefixlen is None else prefixlen
        if not pool.min_prefixlen <= length <= pool.max_prefixlen:
            raise InvalidInput(error_message=f"prefixlen {length} is outside the subnet pool's bounds "
                               f"[{pool.min_prefixlen}, {pool.max_prefixlen}]")
        block = _free_block(pool, taken, length)
        if block is None:
            raise InvalidInput(error_message=f"Insufficient prefix space to allocate subnet size /{length} from "
                               f"subnet pool {pool.id}")
        return str(block)
