"""All table modules; importing this package registers every table on ``Base.metadata``."""

from yunstack.db.tables import compute, hosts, identity, image, migrations, network, servergroups, tasks, volume

__all__ = ["compute", "hosts", "identity", "image", "migrations", "network", "servergroups", "tasks", "volume"]
