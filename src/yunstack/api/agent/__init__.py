"""The agent protocol over HTTP (``/agent/v1``)."""
