"""The per-host agent: owns this host's QEMU processes; talks to the control plane through one interface."""
