"""Cinder v3 at /volume/v3."""
