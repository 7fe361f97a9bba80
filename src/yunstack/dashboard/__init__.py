"""The web dashboard: server-rendered pages (Jinja2) with htmx for the live parts.

It is served by the API's own app under ``/dashboard`` and reaches the cloud only over HTTP through
``yunstack.client``, as any other client would (docs/explanation/dashboard.md).
"""

from yunstack.dashboard.app import PREFIX, Dashboard

__all__ = ["PREFIX", "Dashboard"]
