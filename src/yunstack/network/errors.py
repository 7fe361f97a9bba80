"""Neutron's error names as subclasses of our tree.

``api/faults.py`` puts the class name in ``NeutronError.type``, and clients (and Tempest) read
that name, so these mirror Neutron's exception classes.  They add no behaviour::

    NotFound > NetworkNotFound, SubnetNotFound, SubnetPoolNotFound, PortNotFound, SecurityGroupNotFound,
               SecurityGroupRuleNotFound, RouterNotFound, FloatingIPNotFound,
               ExternalGatewayForFloatingIPNotFound, RouterInterfaceNotFound
    Conflict > NetworkInUse, SubnetInUse, SubnetPoolInUse, PortInUse, IpAddressGenerationFailure,
               IpAddressAlreadyAllocated, SecurityGroupInUse, SecurityGroupRuleExists,
               RouterInUse, FloatingIPPortAlreadyAssociated, MacAddressInUse,
               DeviceIDNotOwnedByTenant, RouterInterfaceInUseByRoute
    BadRequest > InvalidInput, InvalidRoutes
    Forbidden > PolicyNotAuthorized
"""

from __future__ import annotations

from yunstack.errors import BadRequest, Conflict, Forbidden, NotFound


class NetworkNotFound(NotFound):
    """Raised when no network with the id is visible to the caller."""

    message = "Network {id} could not be found."


class SubnetNotFound(NotFound):
    """Raised when no subnet with the id is visible to the caller."""

    message = "Subnet {id} could not be found."


class PortNotFound(NotFound):
    """Raised when no port with the id is visible to the caller."""

    message = "Port {id} could not be found."


class SubnetPoolNotFound(NotFound):
    """Raised when no subnet pool with the id is visible to the caller."""

    message = "Subnet pool {id} could not be found."


class SecurityGroupNotFound(NotFound):
    """Raised when no security group with the id is visible to the caller."""

    message = "Security group {id} does not exist"


class SecurityGroupRuleNotFound(NotFound):
    """Raised when no security group rule with the id is visible to the caller."""

    message = "Security group rule {id} does not exist"


class RouterNotFound(NotFound):
    """Raised when no router with the id is visible to the caller."""

    message = "Router {id} could not be found"


class FloatingIPNotFound(NotFound):
    """Raised when no floating IP with the id is visible to the caller."""

    message = "Floating IP {id} could not be found"


class ExternalGatewayForFloatingIPNotFound(NotFound):
    """Raised when a port's subnet has no router with a gateway on the floating IP's network."""

    message = ("External network {external_network_id} is not reachable from subnet {subnet_id}.  Therefore, "
               "cannot associate Port {port_id} with a Floating IP.")


class RouterInterfaceNotFound(NotFound):
    """Raised when a router has no interface on the given subnet or port."""

    message = "Router {router_id} does not have an interface with id {port_id}"


class NetworkInUse(Conflict):
    """Raised when a network still has ports in use."""

    message = ("Unable to complete operation on network {net_id}. There are one or more ports still in use "
               "on the network.")


class SubnetInUse(Conflict):
    """Raised when a subnet still has addresses allocated to ports other than DHCP."""

    message = ("Unable to complete operation on subnet {subnet_id}: One or more ports have an IP allocation "
               "from this subnet.")


class SubnetPoolInUse(Conflict):
    """Raised when a subnet pool still has subnets allocated from it."""

    message = "Unable to complete operation on subnet pool {subnet_pool_id}. Subnets are allocated from it."


class PortInUse(Conflict):
    """Raised when a port is attached to a device that forbids the operation."""

    message = "Unable to complete operation on port {port_id} for network {net_id}. Port already has an " \
              "attached device {device_id}."


class IpAddressGenerationFailure(Conflict):
    """Raised when a network has no free address left."""

    message = "No more IP addresses available on network {net_id}."


class IpAddressAlreadyAllocated(Conflict):
    """Raised when a requested fixed IP is already in use."""

    message = "IP address {ip} already allocated in subnet {subnet_id}"


class MacAddressInUse(Conflict):
    """Raised when a requested MAC address is already in use on the network."""

    message = "Unable to complete operation for network {net_id}. The mac address {mac} is in use."


class SecurityGroupInUse(Conflict):
    """Raised when a security group is still used by ports."""

    message = "Security Group {id} in use."


class SecurityGroupRuleExists(Conflict):
    """Raised when an identical rule already exists in the group."""

    message = "Security group rule already exists. Rule id is {rule_id}."


class RouterInUse(Conflict):
    """Raised when a router still has interfaces."""

    message = "Router {router_id} still has ports"


class FloatingIPPortAlreadyAssociated(Conflict):
    """Raised when a fixed IP already has a floating IP."""

    message = ("Cannot associate floating IP {floating_ip_address} ({fip_id}) with port {port_id} using fixed "
               "IP {fixed_ip}, as that fixed IP already has a floating IP on external network {net_id}.")


class DeviceIDNotOwnedByTenant(Conflict):
    """Raised when a port's device_id names a server (or compute device) of another project."""

    message = ("The following device_id {device_id} is not owned by your tenant or matches another tenants "
               "router.")


class RouterInterfaceInUseByRoute(Conflict):
    """Raised when an extra route's nexthop is on the subnet of the interface being removed."""

    message = ("Router interface for subnet {subnet_id} on router {router_id} cannot be deleted, as it is "
               "required by one or more routes.")


class InvalidRoutes(BadRequest):
    """Raised when a router's extra routes are malformed or their nexthop is not connected."""

    message = "Invalid format for routes: {routes}, {reason}"


class InvalidInput(BadRequest):
    """Raised when an attribute has an invalid value (Neutron's generic 400)."""

    message = "Invalid input for operation: {error_message}."


class PolicyNotAuthorized(Forbidden):
    """Raised when the policy forbids the action."""

    message = "({action}) is disallowed by policy"
