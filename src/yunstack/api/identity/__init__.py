"""Keystone v3 at /identity."""
