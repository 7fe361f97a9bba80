"""All table modules; importing this package registers every table on ``Base.metadata``."""

from yunstack.db.tables import compute, identity, image, network, servergroups, tasks

__all__ = ["compute", "identity", "image", "network", "servergroups", "tasks"]
