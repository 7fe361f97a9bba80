"""Networking (Neutron v2.0): networks, subnets, ports, IPAM, security groups, routers, floating IPs."""
