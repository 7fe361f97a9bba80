"""The QEMU compute driver: one daemonized QEMU process per guest, controlled over QMP."""
