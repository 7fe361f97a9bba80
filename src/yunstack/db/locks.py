"""Database locks that hold across processes, for as long as the caller's transaction.

Two API workers are two processes (or two connection pools): a ``threading.Lock`` serialises
neither.  These locks live in the database instead and end with the transaction that took them,
so a crash can never leave one held.

- PostgreSQL: a transaction-scoped advisory lock per name (``pg_advisory_xact_lock``).  Names are
  independent: ``quota:<project>`` of two projects never wait for each other.
- SQLite: there is one writer at a time, and every name is that one lock: ``BEGIN IMMEDIATE``
  takes the write lock before the transaction reads anything, so what it reads stays true until
  it commits.  (pysqlite would otherwise read outside any transaction and only lock at the first
  write, which lets two processes both read "room for one" and both write.)
"""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session

SCHEDULER = "scheduler"


def key(name: str) -> int:
    """The signed 32-bit advisory-lock key for ``name`` (stable across processes and versions)."""
    return zlib.crc32(name.encode()) - 2**31


def xact_lock(session: Session, name: str) -> None:
    """Hold lock ``name`` until ``session``'s transaction ends (commit or rollback)."""
    conn = session.connection()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key(name)})
    elif dialect == "sqlite":
        raw = conn.connection.dbapi_connection
        # Already in a transaction means this connection has written: it holds the write lock.
        if raw is not None and not getattr(raw, "in_transaction", True):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def project_lock(session: Session, namespace: str, project_id: str) -> None:
    """Serialise one project's quota checks in ``namespace`` (``quota``, ``netquota``, ...)."""
    xact_lock(session, f"{namespace}:{project_id}")


def scheduler_lock(session: Session) -> None:
    """Serialise claims on hosts: reading host usage, choosing hosts and adding the rows.

    Take it after the project's quota lock (never the other way round), and commit before the
    next claim reads: the lock ends with the transaction, so the next holder sees these claims.
    """
    xact_lock(session, SCHEDULER)


def try_session_lock(session: Session, name: str) -> bool:
    """Take lock ``name`` for ``session``'s connection, across transactions, if it is free.

    PostgreSQL only (several API processes): the caller ends it with ``session_unlock`` before it
    closes the session.  SQLite serves one process, whose own lock is the caller's: True.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key(name)}).scalar())


def session_unlock(session: Session, name: str) -> None:
    """End what ``try_session_lock`` took."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key(name)})
