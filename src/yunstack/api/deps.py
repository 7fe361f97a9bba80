"""Request dependencies shared by every service's routes: the services and the caller's context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from yunstack.errors import Unauthorized
from yunstack.identity.context import AuthContext
from yunstack.wiring import Services


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def auth_context(request: Request) -> AuthContext:
    """The caller's context.  Async on purpose: a cached token costs no thread hop (the hot path)."""
    token = request.headers.get("x-auth-token")
    if not token:
        raise Unauthorized()
    svc: Services = request.app.state.services
    cached = svc.auth.cached(token)
    if cached is not None:
        return cached
    return await run_in_threadpool(svc.auth.validate, token)


Svc = Annotated[Services, Depends(services)]
Ctx = Annotated[AuthContext, Depends(auth_context)]
