"""All table modules; importing this package registers every table on ``Base.metadata``."""

from yunstack.db.tables import (
    aggregates,
    compute,
    hosts,
    identity,
    image,
    migrations,
    network,
    servergroups,
    tasks,
    volume,
)

__all__ = ["aggregates", "compute", "hosts", "identity", "image", "migrations", "network", "servergroups",
           "tasks", "volume"]
