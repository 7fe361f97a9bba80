"""The memory density benchmark (``yun bench density``): research/memory-overcommit.md §9, scaled.

Guests are ramped one by one into a host memory budget (a parent cgroup) under five arms: A0 no
overcommit, A1 Nova's static ratio, A2 KSM only (ksmtuned/MoM), A3 balloon only (Proxmox), A4 the
yunstack memory manager.  ``runner`` drives the ramps, ``spike`` the 1 GiB reclaim micro-test,
``report`` writes the JSON summary and the PNG plots.  See docs/explanation/density-benchmark.md.
"""
