"""Neutron v2.0 at ``/networking/v2.0``."""
