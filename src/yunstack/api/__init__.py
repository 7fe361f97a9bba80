"""The HTTP API: one ASGI app, one route table per service, one place that renders faults."""
