"""Engine and session factory for SQLite (WAL) or PostgreSQL, and schema upgrade at start."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
IDLE_PING_SECONDS = 10.0  # a pooled connection idle longer than this is checked before use


def make_engine(url: str, *, echo: bool = False, autocommit: bool = False) -> Engine:
    """An engine tuned per backend; the SQLite file's directory is created if needed.

    ``autocommit``: each statement commits by itself, with no BEGIN and no COMMIT or ROLLBACK
    round trip.  For the few single statements that every agent sends all the time (an idle
    host's long-poll is one read, a resource report one UPDATE): through a Session such a
    statement cost about 1 ms of CPU, through this 0.3 ms (PostgreSQL, ``bench/scale.py``).
    """
    extra: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}, **extra
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the agent and API read while one writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # As many pooled connections as the API has worker threads (anyio's 40): each request that
    # runs in one may hold a connection, and a connection beyond the pool is closed when it is
    # returned, so a smaller pool made every burst of agent calls (heartbeats, long-polls) open
    # new PostgreSQL connections: a quarter of the control plane's CPU at 200 hosts (bench/scale.py).
    engine = create_engine(url, echo=echo, pool_size=40, max_overflow=20, **extra)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip per transaction,
    a sixth of the control plane's time under many agents (bench/scale.py, py-spy).  A connection
    used within the last IDLE_PING_SECONDS is taken as it is; an older one (the database may have
    restarted meanwhile) is pinged, and a dead one replaced (``DisconnectionError`` makes the pool
    take another), so a restarted PostgreSQL still costs no request.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return  # new, or used a moment ago
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@functools.cache
def _heads() -> frozenset[str]:
    """The newest revisions this code knows (the scripts are read once per process)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe on every start).

    A database already at the newest revision is left as it is after one read of its version:
    running Alembic's machinery loads every migration script again, which is most of a start's
    (and of each test's) time once there are a few dozen of them.
    """
    with engine.connect() as conn:
        if frozenset(MigrationContext.configure(conn).get_current_heads()) == _heads():
            return
    command.upgrade(alembic_config(engine), "head")
