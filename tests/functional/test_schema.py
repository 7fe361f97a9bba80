"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL.

A column added to a table class without its migration (or the other way round) works in tests
that create tables from the classes, then fails on a database upgraded in place.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from yunstack.db.base import Base
from yunstack.db.engine import make_engine, upgrade
from yunstack.wiring import Services  # noqa: F401  (imports every table module, as the app does)


def test_the_migrations_build_exactly_the_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
