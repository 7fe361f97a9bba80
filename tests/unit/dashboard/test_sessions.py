"""The session store: bounded, least recently used first out, dropped when the token expires."""

from __future__ import annotations

from datetime import UTC, datetime

from yunstack.client import YunClient
from yunstack.client.keystone import Scope
from yunstack.dashboard.sessions import Session, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def session(expires: float, user: str = "u") -> Session:
    scope = Scope(user_id=user, user_name="alice", domain_name="Default", project_id="p", project_name="alpha",
                  roles=("member",), expires_at=datetime.fromtimestamp(expires, UTC))
    return Session(client=YunClient("http://127.0.0.1:9"), root_token="t", scope=scope)


def test_a_session_is_found_by_its_random_id_until_its_token_expires() -> None:
    clock = Clock()
    store = Sessions(clock=clock)
    s = session(expires=1_060.0)
    store.add(s)
    assert len(s.id) >= 40 and s.id != s.csrf
    assert store.get(s.id) is s
    assert store.get("someone-elses") is None and store.get(None) is None
    clock.now = 1_060.0
    assert store.get(s.id) is None
    assert len(store) == 0


def test_a_full_store_drops_the_least_recently_used_session() -> None:
    store = Sessions(limit=2, clock=Clock())
    a, b, c = session(2_000.0), session(2_000.0), session(2_000.0)
    store.add(a)
    store.add(b)
    assert store.get(a.id) is a  # a is now the most recently used
    store.add(c)
    assert len(store) == 2
    assert store.get(b.id) is None and store.get(a.id) is a and store.get(c.id) is c


def test_expired_sessions_make_room_first() -> None:
    clock = Clock()
    store = Sessions(limit=2, clock=clock)
    old, live = session(1_010.0), session(2_000.0)
    store.add(old)
    store.add(live)
    clock.now = 1_020.0
    store.add(session(2_000.0))
    assert store.get(live.id) is live


def test_flash_is_shown_once() -> None:
    s = session(2_000.0)
    s.flash = ("note", "Stopping the server.")
    assert s.pop_flash() == ("note", "Stopping the server.")
    assert s.pop_flash() is None


def test_one_user_signing_in_again_and_again_ends_only_their_own_oldest_sessions() -> None:
    store = Sessions(limit=4, clock=Clock(), per_user=2)
    other = session(2_000.0, user="v")
    store.add(other)
    mine = [session(2_000.0) for _ in range(5)]
    for s in mine:
        store.add(s)
    assert store.get(other.id) is other
    assert [store.get(s.id) is s for s in mine] == [False, False, False, True, True]
