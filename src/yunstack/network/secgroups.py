"""Security groups and their rules, and each project's ``default`` group (made on first use).

The default group carries Neutron's default rules: egress anywhere (IPv4 and IPv6) and ingress
from members of the same group (IPv4 and IPv6).  A new group gets only the two egress rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import network as t
from yunstack.errors import Conflict
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import ipam
from yunstack.network import models as m
from yunstack.network.errors import (
    InvalidInput,
    PolicyNotAuthorized,
    SecurityGroupInUse,
    SecurityGroupNotFound,
    SecurityGroupRuleExists,
    SecurityGroupRuleNotFound,
)

# Neutron's protocol names (neutron_lib.constants.IP_PROTOCOL_MAP).
PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ip": 0,
    "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59,
    "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6,
    "udp": 17, "udplite": 136, "vrrp": 112,
}
PORT_PROTOCOLS = {6, 17, 33, 132, 136}
# Protocols that exist only in IPv6 (Neutron refuses them in an IPv4 rule).
IPV6_ONLY = {"ipv6-icmp", "icmpv6", "ipv6-encap", "ipv6-frag", "ipv6-nonxt", "ipv6-opts", "ipv6-route", "58"}
ICMP_PROTOCOLS = {1, 58}
DEFAULT = "default"


def _rule_of(r: t.SecurityGroupRule) -> m.SecurityGroupRule:
    return m.SecurityGroupRule(id=r.id, project_id=r.project_id, security_group_id=r.security_group_id,
                               direction=r.direction, ethertype=r.ethertype, protocol=r.protocol,
                               port_range_min=r.port_range_min, port_range_max=r.port_range_max,
                               remote_ip_prefix=r.remote_ip_prefix, remote_group_id=r.remote_group_id,
                               description=r.description or "", revision_number=r.revision_number,
                               created_at=r.created_at, updated_at=r.updated_at)


def groups_of(s: Session, rows: Sequence[t.SecurityGroup]) -> list[m.SecurityGroup]:
    rules: dict[str, list[m.SecurityGroupRule]] = defaultdict(list)
    ids = [r.id for r in rows]
    if ids:
        for rule in s.scalars(select(t.SecurityGroupRule).where(t.SecurityGroupRule.security_group_id.in_(ids))
                              .order_by(t.SecurityGroupRule.created_at, t.SecurityGroupRule.id)):
            rules[rule.security_group_id].append(_rule_of(rule))
    return [m.SecurityGroup(id=r.id, project_id=r.project_id, description=r.description or "",
                            tags=tuple(r.tags or ()), revision_number=r.revision_number, created_at=r.created_at,
                            updated_at=r.updated_at, name=r.name, rules=tuple(rules[r.id])) for r in rows]


def _add_rule(s: Session, group: t.SecurityGroup, direction: str, ethertype: str,
              remote_group_id: str | None = None) -> None:
    s.add(t.SecurityGroupRule(**c.stamp(), security_group_id=group.id, project_id=group.project_id,
                              direction=direction, ethertype=ethertype, remote_group_id=remote_group_id,
                              description=""))


def new_group(s: Session, project_id: str, name: str, description: str, *, default: bool = False) -> t.SecurityGroup:
    row = t.SecurityGroup(**c.stamp(), name=name, project_id=project_id, description=description, tags=[],
                          default_for=project_id if default else None)
    s.add(row)
    s.flush()
    for ethertype in ("IPv4", "IPv6"):
        _add_rule(s, row, "egress", ethertype)
        if default:
            _add_rule(s, row, "ingress", ethertype, remote_group_id=row.id)
    s.flush()
    return row


def ensure_default_group(db: sessionmaker[Session], project_id: str) -> str:
    """The id of the project's ``default`` group, made (in its own transaction) if missing.

    Two first uses may race; the UNIQUE default_for column lets exactly one insert win.
    """
    with db() as s:
        found = s.scalar(select(t.SecurityGroup.id).where(t.SecurityGroup.default_for == project_id))
    if found is not None:
        return found
    try:
        with db.begin() as s:
            return new_group(s, project_id, DEFAULT, "Default security group", default=True).id
    except IntegrityError:
        with db() as s:
            winner = s.scalar(select(t.SecurityGroup.id).where(t.SecurityGroup.default_for == project_id))
        if winner is None:
            raise
        return winner


def resolve_groups(s: Session, project_id: str, names_or_ids: Sequence[str]) -> list[str]:
    """Group ids of ``project_id`` for names or ids; NotFound for the first unknown one."""
    out = []
    for ref in names_or_ids:
        row = s.get(t.SecurityGroup, ref)
        if row is None or row.project_id != project_id:
            rows = list(s.scalars(select(t.SecurityGroup).where(t.SecurityGroup.project_id == project_id,
                                                                t.SecurityGroup.name == ref)))
            if len(rows) > 1:
                raise Conflict("Multiple security_group matches found for name '{name}', use an ID to be "
                               "more specific.", name=ref)
            if not rows:
                raise SecurityGroupNotFound(id=ref)
            row = rows[0]
        out.append(row.id)
    return out


def _protocol(value: str | None) -> tuple[str | None, int | None]:
    if value is None or value.lower() in ("", "any"):
        return None, None
    text = value.lower()
    if text in PROTOCOLS:
        return text, PROTOCOLS[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return text, int(text)
    raise InvalidInput(error_message=f"Security group rule protocol {value} not supported. Only protocol values "
                       f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported.")


def _check_ports(number: int | None, low: int | None, high: int | None) -> None:
    if low is None and high is None:
        return
    if number is None:
        raise InvalidInput(error_message="Must also specify protocol if port range is given.")
    if number in PORT_PROTOCOLS:
        if low is None or high is None or low > high:
            raise InvalidInput(error_message="For TCP/UDP protocols, port_range_min must be <= port_range_max")
        for port in (low, high):
            if not 1 <= port <= 65535:
                raise InvalidInput(error_message=f"Invalid value for port {port}")
    elif number in ICMP_PROTOCOLS:
        if low is None:
            raise InvalidInput(error_message=f"ICMP code (port-range-max) {high} is provided but ICMP type "
                               "(port-range-min) is missing.")
        for value, what in ((low, "type"), (high, "code")):
            if value is not None and not 0 <= value <= 255:
                raise InvalidInput(error_message=f"Invalid value for ICMP {what} {value}")
    else:
        raise InvalidInput(error_message=f"Invalid protocol {number} for port range, only supported for TCP, UDP, "
                           "UDPLITE, SCTP and DCCP.")


def _any_prefix(prefix: str | None) -> str | None:
    return None if prefix in (None, "0.0.0.0/0", "::/0") else prefix


class SecurityGroupOps(c.Base):
    def _group_row(self, s: Session, ctx: AuthContext, group_id: str) -> t.SecurityGroup:
        row = s.get(t.SecurityGroup, group_id)
        if row is None or not c.owns(ctx, row.project_id):
            raise SecurityGroupNotFound(id=group_id)
        return row

    def ensure_default_security_group(self, project_id: str) -> str:
        """The id of ``project_id``'s default group, made on first use with Neutron's default rules."""
        return ensure_default_group(self._db, project_id)

    def create_security_group(self, ctx: AuthContext, *, name: str, description: str = "",
                              project_id: str | None = None) -> m.SecurityGroup:
        c.require_write(ctx, "create_security_group")
        project = c.owner(ctx, project_id)
        if name == DEFAULT:
            # Neutron: the name is reserved; make sure the real one exists instead of a second one.
            self.ensure_default_security_group(project)
            raise Conflict("Default security group already exists.")
        self.ensure_default_security_group(project)
        with self._db.begin() as s:
            self.quotas.check(s, project, {"security_group": 1, "security_group_rule": 2})
            return groups_of(s, [new_group(s, project, name, description)])[0]

    def list_security_groups(self, ctx: AuthContext) -> list[m.SecurityGroup]:
        if ctx.project_id:
            self.ensure_default_security_group(ctx.project_id)
        q = select(t.SecurityGroup).order_by(t.SecurityGroup.created_at, t.SecurityGroup.id)
        if not ctx.is_admin:
            q = q.where(t.SecurityGroup.project_id == ctx.project_id)
        with self._db() as s:
            return groups_of(s, list(s.scalars(q)))

    def get_security_group(self, ctx: AuthContext, group_id: str) -> m.SecurityGroup:
        with self._db() as s:
            return groups_of(s, [self._group_row(s, ctx, group_id)])[0]

    def update_security_group(self, ctx: AuthContext, group_id: str, *, name: str | None = None,
                              description: str | None = None) -> m.SecurityGroup:
        c.require_write(ctx, "update_security_group")
        with self._db.begin() as s:
            row = self._group_row(s, ctx, group_id)
            if name is not None and name != row.name:
                if row.default_for is not None:
                    raise Conflict("Updating default security group not allowed.")
                if name == DEFAULT:
                    raise Conflict("Default security group already exists.")
                row.name = name
            if description is not None:
                row.description = description
            c.touch(row)
            s.flush()
            return groups_of(s, [row])[0]

    def delete_security_group(self, ctx: AuthContext, group_id: str) -> None:
        c.require_write(ctx, "delete_security_group")
        with self._db.begin() as s:
            row = self._group_row(s, ctx, group_id)
            if row.default_for is not None and not ctx.is_admin:
                raise Conflict("Insufficient rights for removing default security group.")
            if s.scalar(select(t.PortSecurityGroup.port_id)
                        .where(t.PortSecurityGroup.security_group_id == row.id).limit(1)) is not None:
                raise SecurityGroupInUse(id=row.id)
            s.delete(row)

    # -- rules ----------------------------------------------------------------------------------

    def create_security_group_rule(self, ctx: AuthContext, *, security_group_id: str, direction: str,
                                   ethertype: str = "IPv4", protocol: str | None = None,
                                   port_range_min: int | None = None, port_range_max: int | None = None,
                                   remote_ip_prefix: str | None = None, remote_group_id: str | None = None,
                                   description: str = "", project_id: str | None = None) -> m.SecurityGroupRule:
        """Validate like Neutron (protocol, ports, ethertype vs prefix) and refuse duplicates with 409."""
        c.require_write(ctx, "create_security_group_rule")
        if direction not in ("ingress", "egress"):
            raise InvalidInput(error_message=f"'{direction}' is not in ['ingress', 'egress']")
        if ethertype not in ("IPv4", "IPv6"):
            raise InvalidInput(error_message=f"'{ethertype}' is not in ['IPv4', 'IPv6']")
        proto, number = _protocol(protocol)
        if ethertype == "IPv4" and proto in IPV6_ONLY:
            raise InvalidInput(error_message=f"Invalid ethertype {ethertype} for protocol {proto}")
        if number in ICMP_PROTOCOLS and ethertype == "IPv6" and proto == "icmp":
            proto = "ipv6-icmp"
        _check_ports(number, port_range_min, port_range_max)
        if remote_ip_prefix is not None and remote_group_id is not None:
            raise InvalidInput(error_message="Only remote_ip_prefix or remote_group_id may be provided.")
        prefix = ipam.normalize_prefix(remote_ip_prefix, ethertype) if remote_ip_prefix else None
        with self._db.begin() as s:
            group = self._group_row(s, ctx, security_group_id)
            if project_id and project_id != group.project_id and not ctx.is_admin:
                raise PolicyNotAuthorized(action="create_security_group_rule")
            if remote_group_id is not None:
                self._group_row(s, ctx, remote_group_id)
            for other in s.scalars(select(t.SecurityGroupRule)
                                   .where(t.SecurityGroupRule.security_group_id == group.id)):
                same = (other.direction, other.ethertype, other.protocol, other.port_range_min,
                        other.port_range_max, _any_prefix(other.remote_ip_prefix), other.remote_group_id)
                if same == (direction, ethertype, proto, port_range_min, port_range_max, _any_prefix(prefix),
                            remote_group_id):
                    raise SecurityGroupRuleExists(rule_id=other.id)
            self.quotas.check(s, group.project_id, {"security_group_rule": 1})
            row = t.SecurityGroupRule(**c.stamp(), security_group_id=group.id, project_id=group.project_id,
                                      direction=direction, ethertype=ethertype, protocol=proto,
                                      port_range_min=port_range_min, port_range_max=port_range_max,
                                      remote_ip_prefix=prefix, remote_group_id=remote_group_id,
                                      description=description)
            s.add(row)
            c.touch(group)
            s.flush()
            return _rule_of(row)

    def list_security_group_rules(self, ctx: AuthContext) -> list[m.SecurityGroupRule]:
        if ctx.project_id:
            self.ensure_default_security_group(ctx.project_id)
        q = select(t.SecurityGroupRule).order_by(t.SecurityGroupRule.created_at, t.SecurityGroupRule.id)
        if not ctx.is_admin:
            q = q.where(t.SecurityGroupRule.project_id == ctx.project_id)
        with self._db() as s:
            return [_rule_of(r) for r in s.scalars(q)]

    def get_security_group_rule(self, ctx: AuthContext, rule_id: str) -> m.SecurityGroupRule:
        with self._db() as s:
            row = s.get(t.SecurityGroupRule, rule_id)
            if row is None or not c.owns(ctx, row.project_id):
                raise SecurityGroupRuleNotFound(id=rule_id)
            return _rule_of(row)

    def delete_security_group_rule(self, ctx: AuthContext, rule_id: str) -> None:
        c.require_write(ctx, "delete_security_group_rule")
        with self._db.begin() as s:
            row = s.get(t.SecurityGroupRule, rule_id)
            if row is None or not c.owns(ctx, row.project_id):
                raise SecurityGroupRuleNotFound(id=rule_id)
            group = s.get(t.SecurityGroup, row.security_group_id)
            if group is not None:
                c.touch(group)
            s.delete(row)

