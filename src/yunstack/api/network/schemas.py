"""Neutron v2.0 request bodies: strict (unknown attributes are 400, as Neutron's are).

Attributes with a colon (``router:external``, ``binding:host_id``) use aliases.  ``tenant_id`` is
accepted as the old name of ``project_id``.  Fields a client may send as ``null`` to clear
(``gateway_ip``, ``port_id``, ``external_gateway_info``) are told apart from absent ones with
``model_fields_set``.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from yunstack.api.schemas import Strict


def _printable(value: str | None) -> str | None:
    # Names and descriptions travel to hosts (dnsmasq files, iptables comments, logs): a newline
    # or NUL there could forge a line of a config file, so control characters are refused.
    if value is not None and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Text = Annotated[str | None, AfterValidator(_printable)]
Name = Field(default=None, max_length=255)
Desc = Field(default=None, max_length=255)


class _Body(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_max_length=65535)


class _Owned(_Body):
    project_id: str | None = Field(default=None, max_length=255)
    tenant_id: str | None = Field(default=None, max_length=255)

    @property
    def owner(self) -> str | None:
        return self.project_id or self.tenant_id


class NetworkCreate(_Owned):
    name: Text = Name
    description: Text = Desc
    admin_state_up: bool = True
    shared: bool = False
    external: bool = Field(default=False, alias="router:external")
    port_security_enabled: bool = True
    # The provider extension (admin only; checked by the service).
    network_type: str | None = Field(default=None, alias="provider:network_type", max_length=64)
    physical_network: str | None = Field(default=None, alias="provider:physical_network", max_length=64)
    segmentation_id: int | None = Field(default=None, alias="provider:segmentation_id")

    @property
    def provider(self) -> dict[str, object]:
        """The provider:* attributes the request named (null ones too: naming them needs admin)."""
        fields = {"network_type", "physical_network", "segmentation_id"} & self.model_fields_set
        return {f: getattr(self, f) for f in sorted(fields)}


class NetworkUpdate(_Body):
    name: Text = Name
    description: Text = Desc
    admin_state_up: bool | None = None
    shared: bool | None = None
    external: bool | None = Field(default=None, alias="router:external")
    port_security_enabled: bool | None = None


class Pool(_Body):
    start: str = Field(max_length=64)
    end: str = Field(max_length=64)


class Route(_Body):
    destination: str = Field(max_length=64)
    nexthop: str = Field(max_length=64)


class SubnetCreate(_Owned):
    network_id: str = Field(max_length=36)
    cidr: str | None = Field(default=None, max_length=64)
    subnetpool_id: str | None = Field(default=None, max_length=36)
    prefixlen: int | None = Field(default=None, ge=0, le=128)
    ip_version: Literal[4, 6] = 4
    name: Text = Name
    description: Text = Desc
    gateway_ip: str | None = Field(default=None, max_length=64)
    enable_dhcp: bool = True
    dns_nameservers: list[str] = Field(default_factory=list, max_length=5)
    host_routes: list[Route] = Field(default_factory=list, max_length=20)
    allocation_pools: list[Pool] | None = None
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None


class SubnetUpdate(_Body):
    name: Text = Name
    description: Text = Desc
    gateway_ip: str | None = Field(default=None, max_length=64)
    enable_dhcp: bool | None = None
    dns_nameservers: list[str] | None = Field(default=None, max_length=5)
    host_routes: list[Route] | None = Field(default=None, max_length=20)
    allocation_pools: list[Pool] | None = None


class SubnetPoolCreate(_Owned):
    name: Text = Name
    description: Text = Desc
    prefixes: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=100)
    default_prefixlen: int | None = Field(default=None, ge=0, le=128)
    min_prefixlen: int | None = Field(default=None, ge=0, le=128)
    max_prefixlen: int | None = Field(default=None, ge=0, le=128)
    shared: bool = False
    is_default: bool = False


class SubnetPoolUpdate(_Body):
    name: Text = Name
    description: Text = Desc
    prefixes: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, min_length=1,
                                                                           max_length=100)
    default_prefixlen: int | None = Field(default=None, ge=0, le=128)
    min_prefixlen: int | None = Field(default=None, ge=0, le=128)
    max_prefixlen: int | None = Field(default=None, ge=0, le=128)
    is_default: bool | None = None


class FixedIp(_Body):
    subnet_id: str | None = Field(default=None, max_length=36)
    ip_address: str | None = Field(default=None, max_length=64)


class AddressPair(_Body):
    ip_address: str = Field(max_length=64)
    mac_address: str | None = Field(default=None, max_length=32)


class _PortCommon(_Body):
    name: Text = Name
    description: Text = Desc
    admin_state_up: bool | None = None
    mac_address: str | None = Field(default=None, max_length=32)
    fixed_ips: list[FixedIp] | None = None
    device_id: Text = Field(default=None, max_length=255)
    device_owner: Text = Field(default=None, max_length=255)
    binding_host_id: str | None = Field(default=None, alias="binding:host_id", max_length=255)
    binding_vnic_type: Literal["normal"] | None = Field(default=None, alias="binding:vnic_type")
    binding_profile: dict[str, str] | None = Field(default=None, alias="binding:profile")
    port_security_enabled: bool | None = None
    allowed_address_pairs: list[AddressPair] | None = None
    security_groups: list[str] | None = None


class PortCreate(_PortCommon):
    network_id: str = Field(max_length=36)
    project_id: str | None = Field(default=None, max_length=255)
    tenant_id: str | None = Field(default=None, max_length=255)

    @property
    def owner(self) -> str | None:
        return self.project_id or self.tenant_id


class PortUpdate(_PortCommon):
    pass


class SecurityGroupCreate(_Owned):
    name: Annotated[str, AfterValidator(_printable)] = Field(max_length=255)
    description: Text = Desc
    stateful: Literal[True] | None = None


class SecurityGroupUpdate(_Body):
    name: Text = Name
    description: Text = Desc


class RuleCreate(_Owned):
    security_group_id: str = Field(max_length=36)
    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"
    protocol: str | int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = Field(default=None, max_length=64)
    remote_group_id: str | None = Field(default=None, max_length=36)
    description: Text = Desc


class GatewayInfo(_Body):
    # Absent only in ``{}``, which clears the gateway (what `openstack router unset` sends).
    network_id: str | None = Field(default=None, max_length=36)
    enable_snat: bool | None = None
    external_fixed_ips: list[FixedIp] | None = None


class RouterCreate(_Owned):
    name: Text = Name
    description: Text = Desc
    admin_state_up: bool = True
    external_gateway_info: GatewayInfo | None = None


class RouterUpdate(_Body):
    name: Text = Name
    description: Text = Desc
    admin_state_up: bool | None = None
    external_gateway_info: GatewayInfo | None = None
    routes: list[Route] | None = Field(default=None, max_length=100)


class ExtraRoutes(_Body):
    routes: list[Route] = Field(max_length=100)


class ExtraRoutesBody(_Body):
    router: ExtraRoutes


class InterfaceBody(_Body):
    subnet_id: str | None = Field(default=None, max_length=36)
    port_id: str | None = Field(default=None, max_length=36)


class FloatingIpCreate(_Owned):
    floating_network_id: str = Field(max_length=36)
    port_id: str | None = Field(default=None, max_length=36)
    fixed_ip_address: str | None = Field(default=None, max_length=64)
    floating_ip_address: str | None = Field(default=None, max_length=64)
    subnet_id: str | None = Field(default=None, max_length=36)
    description: Text = Desc


class FloatingIpUpdate(_Body):
    port_id: str | None = Field(default=None, max_length=36)
    fixed_ip_address: str | None = Field(default=None, max_length=64)
    description: Text = Desc


class QuotaUpdate(_Body):
    network: int | None = None
    subnet: int | None = None
    port: int | None = None
    router: int | None = None
    floatingip: int | None = None
    security_group: int | None = None
    security_group_rule: int | None = None
    # Neutron's (API extension quota-check-limit, which `openstack quota set` sends): refuse a
    # limit below what is in use; without it such a limit is taken, and only new resources wait.
    check_limit: bool = False


class Tags(_Body):
    tags: list[Annotated[str, AfterValidator(_printable), Field(min_length=1, max_length=255)]] = \
        Field(max_length=50)


# -- envelopes ---------------------------------------------------------------------------------

class NetworkCreateBody(_Body):
    network: NetworkCreate


class NetworkUpdateBody(_Body):
    network: NetworkUpdate


class SubnetCreateBody(_Body):
    subnet: SubnetCreate


class SubnetUpdateBody(_Body):
    subnet: SubnetUpdate


class SubnetPoolCreateBody(_Body):
    subnetpool: SubnetPoolCreate


class SubnetPoolUpdateBody(_Body):
    subnetpool: SubnetPoolUpdate


class PortCreateBody(_Body):
    """One port (``port``) or many at once (``ports``, created all or nothing)."""

    port: PortCreate | None = None
    ports: list[PortCreate] | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_form(self) -> PortCreateBody:
        if (self.port is None) == (self.ports is None):
            raise ValueError("give either port or ports")
        return self


class PortUpdateBody(_Body):
    port: PortUpdate


class SecurityGroupCreateBody(_Body):
    security_group: SecurityGroupCreate


class SecurityGroupUpdateBody(_Body):
    security_group: SecurityGroupUpdate


class RuleCreateBody(_Body):
    security_group_rule: RuleCreate


class RouterCreateBody(_Body):
    router: RouterCreate


class RouterUpdateBody(_Body):
    router: RouterUpdate


class FloatingIpCreateBody(_Body):
    floatingip: FloatingIpCreate


class FloatingIpUpdateBody(_Body):
    floatingip: FloatingIpUpdate


class QuotaUpdateBody(_Body):
    quota: QuotaUpdate
