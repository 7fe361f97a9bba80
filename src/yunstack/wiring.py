"""The composition root: builds every service from the Config once, for the API, the agent and tests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from yunstack.config import Config
from yunstack.db.engine import make_engine, session_factory, upgrade
from yunstack.identity.auth import AuthService
from yunstack.identity.passwords import Hasher
from yunstack.identity.service import IdentityService
from yunstack.identity.tokens import KeyRepository, TokenCodec


@dataclass(frozen=True, kw_only=True)
class Services:
    config: Config
    engine: Engine
    db: sessionmaker[Session]
    keys: KeyRepository
    auth: AuthService
    identity: IdentityService

    def close(self) -> None:
        self.engine.dispose()


def build(config: Config, *, migrate: bool = True) -> Services:
    state = config.server.state_path
    state.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url, echo=config.database.echo)
    if migrate:
        upgrade(engine)
    db = session_factory(engine)
    keys = KeyRepository(state / "fernet-keys", config.identity.max_active_keys)
    keys.setup()
    hasher = Hasher(config.identity)
    auth = AuthService(db, config.identity, TokenCodec(keys), hasher)
    identity = IdentityService(db, auth, hasher)
    return Services(config=config, engine=engine, db=db, keys=keys, auth=auth, identity=identity)
