"""One quota engine for every service: limits, usage counted per resource, check under a project lock.

Each service (compute, network, and block storage next) makes one ``QuotaEngine`` with its own
limits table and lock namespace, registers its resources with a default and a counter, and keeps
its API's own shapes and error messages in a thin facade (``compute.quotas``, ``network.quotas``).
"""

from yunstack.quota.engine import MAX_LIMIT, UNLIMITED, Counter, OverLimit, QuotaEngine

__all__ = ["MAX_LIMIT", "UNLIMITED", "Counter", "OverLimit", "QuotaEngine"]
