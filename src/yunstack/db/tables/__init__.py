"""All table modules; importing this package registers every table on ``Base.metadata``."""

from yunstack.db.tables import identity

__all__ = ["identity"]
