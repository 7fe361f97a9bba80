"""``db.locks`` on SQLite: a lock is the single writer, taken before the transaction reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from yunstack.db import locks


def test_advisory_keys_are_stable_signed_32_bit_integers() -> None:
    assert locks.key("quota:p1") == locks.key("quota:p1")
    assert locks.key("quota:p1") != locks.key("netquota:p1")
    assert all(-(2**31) <= locks.key(n) < 2**31 for n in ("", "scheduler", "quota:" + "x" * 500))


def test_on_sqlite_a_held_lock_keeps_a_second_connection_from_taking_any_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first = create_engine(url)
    second = create_engine(url, connect_args={"timeout": 0.1})
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE x (n INTEGER)"))
    with Session(first) as a, Session(second) as b:
        locks.scheduler_lock(a)
        with pytest.raises(OperationalError, match="locked"):
            locks.project_lock(b, "quota", "another-project")  # on SQLite every name is the one writer
        a.commit()
        b.rollback()
        locks.project_lock(b, "quota", "another-project")
        b.execute(text("INSERT INTO x VALUES (1)"))
        b.commit()
    first.dispose()
    second.dispose()


def test_on_sqlite_a_lock_after_a_write_in_the_same_transaction_is_already_held(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE x (n INTEGER)"))
    with Session(engine) as s:
        s.execute(text("INSERT INTO x VALUES (1)"))
        locks.scheduler_lock(s)  # no second BEGIN: that would be an error
        locks.scheduler_lock(s)
        s.commit()
    engine.dispose()
