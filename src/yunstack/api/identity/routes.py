"""Keystone v3 routes: one table, handlers that parse, call the service and render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.deps import Ctx, Svc
from yunstack.api.identity import schemas as s
from yunstack.api.identity import views as v
from yunstack.errors import BadRequest, Unauthorized
from yunstack.identity.auth import AuthRequest, NamedRef

router = APIRouter(prefix="/identity", tags=["identity"])
Json = dict[str, Any]


def _base(svc: Svc) -> str:
    return svc.config.server.base_url


def _ref(user: s.UserRef | s.ProjectRef | None) -> NamedRef | None:
    if user is None:
        return None
    dom = user.domain
    return NamedRef(id=user.id, name=user.name, domain_id=dom.id if dom else None,
                    domain_name=dom.name if dom else None)


def _auth_request(body: s.AuthBody) -> AuthRequest:
    ident, scope = body.auth.identity, body.auth.scope
    project = None
    if isinstance(scope, s.Scope):
        if scope.domain is not None or scope.system is not None or scope.OS_TRUST_trust is not None:
            raise Unauthorized("Only project-scoped and unscoped tokens are supported; scope to a project.")
        project = _ref(scope.project)
    req = AuthRequest(methods=tuple(ident.methods), project=project, unscoped=scope == "unscoped")
    method = ident.methods[0]
    if method == "password" and ident.password is not None:
        pu = ident.password.user
        return AuthRequest(methods=req.methods, project=project, unscoped=req.unscoped,
                           user=_ref(s.UserRef(id=pu.id, name=pu.name, domain=pu.domain)),
                           password=pu.password)
    if method == "token" and ident.token is not None:
        return AuthRequest(methods=req.methods, project=project, unscoped=req.unscoped,
                           token=ident.token.id)
    if method == "application_credential" and ident.application_credential is not None:
        ac = ident.application_credential
        return AuthRequest(methods=req.methods, app_cred=NamedRef(id=ac.id, name=ac.name),
                           app_cred_user=_ref(ac.user), app_cred_secret=ac.secret)
    raise BadRequest("auth.identity.{method} is required for method {method}.", method=method)


# -- versions ------------------------------------------------------------------------------------

@router.get("", status_code=300)
@router.get("/", status_code=300, include_in_schema=False)
def versions(svc: Svc) -> JSONResponse:
    return JSONResponse({"versions": {"values": [v.version(_base(svc))]}}, status_code=300)


@router.get("/v3")
@router.get("/v3/", include_in_schema=False)
def version(svc: Svc) -> Json:
    return {"version": v.version(_base(svc))}


# -- tokens --------------------------------------------------------------------------------------

@router.post("/v3/auth/tokens", status_code=201)
def issue_token(body: s.AuthBody, svc: Svc, response: Response,
                nocatalog: str | None = Query(default=None)) -> Json:
    ctx = svc.auth.authenticate(_auth_request(body))
    response.headers["X-Subject-Token"] = ctx.token
    response.headers["Vary"] = "X-Auth-Token"
    return {"token": v.token(ctx, None if nocatalog is not None else svc.auth.catalog())}


@router.get("/v3/auth/tokens")
def check_token(ctx: Ctx, svc: Svc, response: Response,
                x_subject_token: str | None = Header(default=None),
                nocatalog: str | None = Query(default=None)) -> Json:
    subject = svc.auth.subject(ctx, x_subject_token, "identity:validate_token")
    response.headers["X-Subject-Token"] = subject.token
    return {"token": v.token(subject, None if nocatalog is not None else svc.auth.catalog())}


@router.head("/v3/auth/tokens", status_code=200)
def head_token(ctx: Ctx, svc: Svc, x_subject_token: str | None = Header(default=None)) -> Response:
    subject = svc.auth.subject(ctx, x_subject_token, "identity:check_token")
    return Response(status_code=200, headers={"X-Subject-Token": subject.token})


@router.delete("/v3/auth/tokens", status_code=204)
def revoke_token(ctx: Ctx, svc: Svc, x_subject_token: str | None = Header(default=None)) -> Response:
    subject = svc.auth.subject(ctx, x_subject_token, "identity:revoke_token")
    svc.auth.revoke_token(subject.token)
    return Response(status_code=204)


@router.get("/v3/auth/catalog")
def auth_catalog(ctx: Ctx, svc: Svc, request: Request) -> Json:
    if ctx.project is None:
        raise Unauthorized("The catalog needs a project-scoped token.")
    return {"catalog": v.catalog(svc.auth.catalog()), "links": {"self": str(request.url)}}


@router.get("/v3/auth/projects")
def auth_projects(ctx: Ctx, svc: Svc, request: Request) -> Json:
    return {"projects": [v.project(_base(svc), p) for p in svc.identity.user_projects(ctx, ctx.user.id)],
            "links": {"self": str(request.url), "next": None, "previous": None}}


@router.get("/v3/auth/domains")
def auth_domains(ctx: Ctx, svc: Svc, request: Request) -> Json:
    return {"domains": [v.domain(_base(svc), d) for d in svc.identity.user_domains(ctx)],
            "links": {"self": str(request.url), "next": None, "previous": None}}


# -- domains -------------------------------------------------------------------------------------

@router.get("/v3/domains")
def list_domains(ctx: Ctx, svc: Svc, request: Request, name: str | None = None) -> Json:
    return {"domains": [v.domain(_base(svc), d) for d in svc.identity.list_domains(ctx, name)],
            "links": {"self": str(request.url), "next": None, "previous": None}}


@router.get("/v3/domains/{domain_id}")
def show_domain(domain_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"domain": v.domain(_base(svc), svc.identity.get_domain(ctx, domain_id))}


@router.post("/v3/domains", status_code=201)
def create_domain(body: s.DomainCreateBody, ctx: Ctx, svc: Svc) -> Json:
    d = body.domain
    made = svc.identity.create_domain(ctx, name=d.name, description=d.description or "",
                                      enabled=d.enabled)
    return {"domain": v.domain(_base(svc), made)}


@router.patch("/v3/domains/{domain_id}")
def update_domain(domain_id: str, body: s.DomainUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    d = body.domain
    made = svc.identity.update_domain(ctx, domain_id, name=d.name, description=d.description,
                                      enabled=d.enabled)
    return {"domain": v.domain(_base(svc), made)}
