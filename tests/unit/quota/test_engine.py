"""The quota engine on its own: a service registers resources and counters, and gets limits,
usage, the check, ``allowed_count`` and overrides, with its own error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from yunstack.errors import Conflict
from yunstack.quota import QuotaEngine


class Base(DeclarativeBase):
    pass


class Limit(Base):
    __tablename__ = "limit"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    hard_limit: Mapped[int]


class Volume(Base):
    __tablename__ = "volume"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    size_gb: Mapped[int]


class OverLimit(Conflict):
    message = "over {resource}: {requested} wanted, {used} of {limit} used"


def _over(resource: str, requested: int, used: int, limit: int) -> OverLimit:
    return OverLimit(resource=resource, requested=requested, used=used, limit=limit)


calls: list[str] = []


def _volumes(s: Session, project_id: str, _user: str | None) -> dict[str, int]:
    calls.append("volumes")
    n, size = s.execute(select(func.count(Volume.id), func.coalesce(func.sum(Volume.size_gb), 0))
                        .where(Volume.project_id == project_id)).one()
    return {"volumes": int(n), "gigabytes": int(size)}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    Base.metadata.create_all(engine)
    calls.clear()
    yield sessionmaker(engine)
    engine.dispose()


def storage() -> QuotaEngine:
    quota = QuotaEngine("volquota", Limit, _over)
    quota.register({"volumes": 2, "gigabytes": 10}, _volumes)
    quota.register({"per_volume_gigabytes": -1})
    return quota


def test_a_service_plugs_in_by_registering_its_resources_and_a_counter(db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        s.add(Volume(project_id="p", size_gb=4))
        s.add(Volume(project_id="other", size_gb=100))
    with db() as s:
        assert quota.limits(s, "p") == {"volumes": 2, "gigabytes": 10, "per_volume_gigabytes": -1}
        assert quota.usage(s, "p") == {"volumes": 1, "gigabytes": 4, "per_volume_gigabytes": 0}


def test_registering_a_resource_twice_is_refused() -> None:
    quota = storage()
    with pytest.raises(ValueError, match="volumes"):
        quota.register({"volumes": 1})


def test_the_check_raises_the_services_own_error_naming_the_numbers(db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        quota.check(s, "p", {"volumes": 1, "gigabytes": 10})
        s.add(Volume(project_id="p", size_gb=10))
    with db.begin() as s, pytest.raises(OverLimit) as err:
        quota.check(s, "p", {"volumes": 1, "gigabytes": 1})
    assert err.value.text == "over gigabytes: 1 wanted, 10 of 10 used"


def test_a_check_counts_only_what_it_asks_about(db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        quota.check(s, "p", {"per_volume_gigabytes": 5})
        quota.check(s, "p", {"volumes": 0, "gigabytes": -3})
    assert calls == []


def test_allowed_count_makes_as_many_as_fit_or_refuses_when_not_even_the_minimum_fits(
        db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        assert quota.allowed_count(s, "p", {"volumes": 1, "gigabytes": 3}, 1, 1_000_000) == 2
        s.add(Volume(project_id="p", size_gb=9))
    with db.begin() as s:
        assert quota.allowed_count(s, "p", {"volumes": 1, "gigabytes": 1}, 1, 5) == 1
        with pytest.raises(OverLimit, match="gigabytes: 2 wanted"):
            quota.allowed_count(s, "p", {"volumes": 1, "gigabytes": 2}, 1, 5)


def test_overrides_win_over_defaults_and_may_not_go_below_usage_unless_allowed(
        db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        s.add(Volume(project_id="p", size_gb=6))
    with db.begin() as s:
        assert quota.set_limits(s, "p", {"gigabytes": 20})["gigabytes"] == 20
        assert quota.set_limits(s, "p", {"gigabytes": 1})["gigabytes"] == 1  # no usage rule given
    with db.begin() as s, pytest.raises(OverLimit):
        quota.set_limits(s, "p", {"gigabytes": 5}, below_usage=_over)
    with db.begin() as s:
        assert quota.overridden_projects(s) == ["p"]
        quota.reset(s, "p")
    with db() as s:
        assert quota.limits(s, "p")["gigabytes"] == 10
        assert quota.overridden_projects(s) == []


def test_unlimited_is_minus_one(db: sessionmaker[Session]) -> None:
    quota = storage()
    with db.begin() as s:
        quota.set_limits(s, "p", {"volumes": -1})
        quota.check(s, "p", {"volumes": 10**6})
        assert quota.allowed_count(s, "p", {"volumes": 1}, 1, 50) == 50
