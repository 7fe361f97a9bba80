"""The PostgreSQL pool pings only connections that sat idle, and replaces a dead one without failing a request."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import postgres_database
from yunstack.db import engine as engine_mod
from yunstack.db.engine import make_engine


def test_an_idle_connection_whose_server_side_died_is_replaced_before_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with postgres_database("yt_pool") as (url, _name):
        engine = make_engine(url)
        try:
            with engine.connect() as c:
                first = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # The database restarts, as far as this connection knows: its backend is gone.
            admin = create_engine(os.environ["YUN_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                assert c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
            admin.dispose()
            monkeypatch.setattr(engine_mod, "IDLE_PING_SECONDS", 0.0)  # it has been idle long enough
            with engine.connect() as c:  # no error: the dead connection was pinged and replaced
                second = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
            assert second != first
            monkeypatch.setattr(engine_mod, "IDLE_PING_SECONDS", 3600.0)  # a busy connection is not pinged
            with engine.connect() as c:
                assert c.execute(text("SELECT pg_backend_pid()")).scalar_one() == second
        finally:
            engine.dispose()
