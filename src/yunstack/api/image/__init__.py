"""Glance v2 at /image."""
