"""Volume backends: ``file`` (qcow2 files on this host) and ``fake`` (in memory, for tests)."""
