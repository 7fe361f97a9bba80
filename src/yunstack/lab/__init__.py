"""Lab tooling: many hosts on one machine (network namespaces joined by an underlay)."""
