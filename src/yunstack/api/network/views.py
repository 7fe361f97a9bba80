"""Network entities -> Neutron v2.0 JSON, exactly as Neutron shapes them."""

from __future__ import annotations

from typing import Any

from yunstack.network import models as m
from yunstack.types import isotime

Json = dict[str, Any]

# (alias, name, description) of every extension we implement, and only those.
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("extraroute-atomic", "Atomically add/remove extra routes",
     "Edit extra routes of a router on server side by atomically adding/removing extra routes"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode",
     "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota-check-limit", "Quota limit checking",
     "Extension for checking the resource usage before applying a new quota limit"),
    ("quota_details", "Quota details management support",
     "Expose functions for quotas usage statistics per project"),
    ("router", "Neutron L3 Router",
     "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks "
     "via a NAT gateway."),
    ("security-group", "security-group", "The security groups extension."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("subnet_allocation", "Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
    ("standard-attr-description", "standard-attr-description",
     "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers",
     "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, "
     "router, network, policy, subnetpool, port, security_group, floatingip",
     "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps",
     "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
)
RESOURCES = ("networks", "subnets", "subnetpools", "ports", "routers", "floatingips", "security-groups",
             "security-group-rules", "quotas", "extensions")


def versions(base: str) -> Json:
    return {"versions": [{"id": "v2.0", "status": "CURRENT",
                          "links": [{"href": f"{base}/networking/v2.0/", "rel": "self"}]}]}


def resources(base: str) -> Json:
    return {"resources": [{"name": r[:-1] if r.endswith("s") else r, "collection": r,
                           "links": [{"href": f"{base}/networking/v2.0/{r}", "rel": "self"}]}
                          for r in RESOURCES]}


def extension(alias: str, name: str, description: str) -> Json:
    return {"alias": alias, "name": name, "description": description, "updated": "2013-01-20T00:00:00-00:00",
            "links": []}


def _std(x: m.Standard) -> Json:
    return {"id": x.id, "project_id": x.project_id, "tenant_id": x.project_id, "description": x.description,
            "tags": list(x.tags), "created_at": isotime(x.created_at), "updated_at": isotime(x.updated_at),
            "revision_number": x.revision_number}


def network(n: m.Network, *, admin: bool) -> Json:
    body = {**_std(n), "name": n.name, "admin_state_up": n.admin_state_up, "status": n.status,
            "subnets": list(n.subnets), "shared": n.shared, "router:external": n.external, "mtu": n.mtu,
            "port_security_enabled": n.port_security_enabled}
    if admin:
        # Neutron shows provider:* to admins only.  A tenant network is a VXLAN segment between
        # hosts; the external network is a bridge on the network host alone (Neutron's "local").
        body.update({"provider:network_type": "local" if n.external else "vxlan",
                     "provider:physical_network": None,
                     "provider:segmentation_id": None if n.external else n.segmentation_id})
    return body


def subnet(x: m.Subnet) -> Json:
    return {**_std(x), "name": x.name, "network_id": x.network_id, "ip_version": x.ip_version, "cidr": x.cidr,
            "gateway_ip": x.gateway_ip, "enable_dhcp": x.enable_dhcp, "subnetpool_id": x.subnetpool_id,
            "ipv6_ra_mode": x.ipv6_ra_mode, "ipv6_address_mode": x.ipv6_address_mode,
            "dns_nameservers": list(x.dns_nameservers),
            "host_routes": [{"destination": h.destination, "nexthop": h.nexthop} for h in x.host_routes],
            "allocation_pools": [{"start": p.start, "end": p.end} for p in x.allocation_pools]}


def subnetpool(x: m.SubnetPool) -> Json:
    return {**_std(x), "name": x.name, "ip_version": x.ip_version, "prefixes": list(x.prefixes),
            "default_prefixlen": x.default_prefixlen, "min_prefixlen": x.min_prefixlen,
            "max_prefixlen": x.max_prefixlen, "shared": x.shared, "is_default": x.is_default,
            "address_scope_id": None, "default_quota": None}


def port(p: m.Port, *, admin: bool) -> Json:
    body = {**_std(p), "name": p.name, "network_id": p.network_id, "mac_address": p.mac_address,
            "admin_state_up": p.admin_state_up, "status": p.status, "device_id": p.device_id,
            "device_owner": p.device_owner,
            "fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in p.fixed_ips],
            "allowed_address_pairs": [{"ip_address": a.ip_address, "mac_address": a.mac_address}
                                      for a in p.allowed_address_pairs],
            "security_groups": list(p.security_groups), "port_security_enabled": p.port_security_enabled}
    if admin:
        # Neutron shows binding:* to admins only.
        body.update({"binding:host_id": p.binding_host, "binding:vnic_type": "normal", "binding:profile": {},
                     "binding:vif_type": "tap" if p.binding_host else "unbound",
                     "binding:vif_details": {"port_filter": True} if p.binding_host else {}})
    else:
        body["binding:vnic_type"] = "normal"
    return body


def rule(r: m.SecurityGroupRule) -> Json:
    return {"id": r.id, "project_id": r.project_id, "tenant_id": r.project_id,
            "security_group_id": r.security_group_id, "direction": r.direction, "ethertype": r.ethertype,
            "protocol": r.protocol, "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
            "remote_ip_prefix": r.remote_ip_prefix, "remote_group_id": r.remote_group_id,
            "description": r.description, "created_at": isotime(r.created_at),
            "updated_at": isotime(r.updated_at), "revision_number": r.revision_number}


def security_group(g: m.SecurityGroup) -> Json:
    return {**_std(g), "name": g.name, "security_group_rules": [rule(r) for r in g.rules]}


def router(r: m.Router) -> Json:
    gw = None
    if r.gateway is not None:
        gw = {"network_id": r.gateway.network_id, "enable_snat": r.gateway.enable_snat,
              "external_fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address}
                                     for f in r.gateway.external_fixed_ips]}
    return {**_std(r), "name": r.name, "admin_state_up": r.admin_state_up, "status": r.status,
            "external_gateway_info": gw,
            "routes": [{"destination": x.destination, "nexthop": x.nexthop} for x in r.routes]}


def interface_info(i: m.RouterInterfaceInfo) -> Json:
    return {"id": i.id, "tenant_id": i.project_id, "project_id": i.project_id, "port_id": i.port_id,
            "subnet_id": i.subnet_id, "subnet_ids": list(i.subnet_ids), "network_id": i.network_id}


def floatingip(f: m.FloatingIp) -> Json:
    return {**_std(f), "floating_ip_address": f.floating_ip_address, "floating_network_id": f.floating_network_id,
            "router_id": f.router_id, "port_id": f.port_id, "fixed_ip_address": f.fixed_ip_address,
            "status": f.status}


def quota(limits: dict[str, int]) -> Json:
    return {"quota": dict(limits)}


def quota_details(usage: dict[str, m.QuotaUsage]) -> Json:
    return {"quota": {r: {"limit": u.limit, "used": u.used, "reserved": u.reserved} for r, u in usage.items()}}
