"""Compute: the Nova-like service, its scheduler and the per-host virt drivers."""
