"""All table modules; importing this package registers every table on ``Base.metadata``."""

from yunstack.db.tables import compute, identity, image, network, servergroups

__all__ = ["compute", "identity", "image", "network", "servergroups"]
