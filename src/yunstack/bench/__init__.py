"""Benchmarks that run on a real host (QEMU, cgroups, KSM) and write JSON reports and plots."""
