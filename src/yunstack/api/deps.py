"""Request dependencies shared by every service's routes: the services and the caller's context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from yunstack.errors import Unauthorized
from yunstack.identity.context import AuthContext
from yunstack.wiring import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def auth_context(request: Request) -> AuthContext:
    token = request.headers.get("x-auth-token")
    if not token:
        raise Unauthorized()
    svc: Services = request.app.state.services
    return svc.auth.validate(token)


Svc = Annotated[Services, Depends(services)]
Ctx = Annotated[AuthContext, Depends(auth_context)]
