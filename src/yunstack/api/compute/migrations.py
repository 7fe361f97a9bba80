"""Moving servers: ``os-migrateLive`` (its microversion rules), ``os-migrations`` and a server's migrations.

Shapes follow Tempest's ``api_schema/response/compute`` (v2_1, v2_23 ``migration_type`` and links,
v2_59 ``uuid`` and paging) and Nova's ``server_migrations`` (2.22 force_complete, 2.23 list/show,
2.24 abort).  The live migration's work is ``compute.operations.migrate``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.compute.views_misc import paging
from yunstack.api.deps import Ctx, Svc
from yunstack.compute.migrations import MigrationFilters, MigrationView
from yunstack.compute.operations.migrate import LiveMigrateBody
from yunstack.errors import BadRequest, NotFound
from yunstack.identity.context import AuthContext
from yunstack.wiring import Services

router = APIRouter(prefix="/compute/v2.1", tags=["compute", "migrations"])
Json = dict[str, Any]
SERVER = "/servers/{server_id}/migrations"

_TRUE, _FALSE = ("true", "1", "yes", "on", "t", "y"), ("false", "0", "no", "off", "f", "n")


def _boolean(name: str, value: Any, *, strings: bool) -> bool:
    """Nova's ``boolean`` parameter type: a JSON boolean, or (before 2.25) one of its strings."""
    if isinstance(value, bool):
        return value
    if strings and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise BadRequest("Invalid input for field/attribute {name}. Value: {value}.", name=name, value=value)


def live_body(v: APIVersion, args: Any) -> LiveMigrateBody:
    """``os-migrateLive``'s body by microversion: 2.25 ``"auto"`` (and no disk_over_commit), 2.30 ``force``."""
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute os-migrateLive. Value: {value}.", value=args)
    required = {"host", "block_migration"} | (set() if v.at_least("2.25") else {"disk_over_commit"})
    known = required | ({"force"} if v.at_least("2.30") else set())
    if set(args) - known:
        extra = ", ".join(sorted(set(args) - known))
        raise BadRequest("Additional properties are not allowed ({extra} was unexpected)", extra=extra)
    if required - set(args):
        missing = sorted(required - set(args))[0]
        raise BadRequest("'{name}' is a required property", name=missing)
    host = args["host"]
    if host is not None and (not isinstance(host, str) or not 1 <= len(host) <= 255):
        raise BadRequest("Invalid input for field/attribute host. Value: {value}.", value=host)
    if "disk_over_commit" in args:
        _boolean("disk_over_commit", args["disk_over_commit"], strings=True)  # checked, then unused (as Nova)
    raw = args["block_migration"]
    block: bool | None
    if v.at_least("2.25"):
        block = None if raw == "auto" else _boolean("block_migration", raw, strings=False)
    else:
        # Before 2.25 a client cannot say "auto", so false cannot mean "I know the storage is
        # shared": every disk here is local, so both values mean a block migration.
        _boolean("block_migration", raw, strings=True)
        block = None
    force = _boolean("force", args["force"], strings=False) if "force" in args else False
    # Before 2.30 naming a host bypassed the scheduler; from 2.30 only with force (gone again in 2.68).
    forced = host is not None and (force or not v.at_least("2.30"))
    return LiveMigrateBody(host=host, block_migration=block, force=forced)


def live_migrate(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    """``POST /servers/{id}/action {"os-migrateLive": ...}``: 202, then the steps run on both hosts."""
    svc.compute.action(ctx, server_id, "live-migration", rid, live_body(v, args))
    return Response(status_code=202)


def _naive(value: datetime) -> str:
    """Nova's rendering of a migration's times: ISO 8601 with microseconds and no zone."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _flavor_int(flavor_id: str | None) -> int | None:
    # Nova reports its flavors' integer database ids; ours are their API ids, numeric or not.
    return int(flavor_id) if flavor_id is not None and flavor_id.isdigit() else None


def os_migration(m: MigrationView, v: APIVersion, base: str) -> Json:
    body: Json = {"id": m.id, "status": m.status, "instance_uuid": m.instance_uuid,
                  "source_node": m.source_compute, "source_compute": m.source_compute,
                  # "" when no host took the server (a failed evacuation): Nova's null.
                  "dest_node": m.dest_compute or None, "dest_compute": m.dest_compute or None,
                  "dest_host": m.dest_host, "old_instance_type_id": _flavor_int(m.old_flavor_id),
                  "new_instance_type_id": _flavor_int(m.new_flavor_id),
                  "created_at": _naive(m.created_at), "updated_at": _naive(m.updated_at)}
    if v.at_least("2.23"):
        body["migration_type"] = m.migration_type
        if m.migration_type == "live-migration" and m.in_progress:
            path = f"servers/{m.instance_uuid}/migrations/{m.id}"
            body["links"] = [{"rel": "self", "href": f"{base}/compute/v2.1/{path}"},
                             {"rel": "bookmark", "href": f"{base}/compute/{path}"}]
    if v.at_least("2.59"):
        body["uuid"] = m.uuid
    if v.at_least("2.80"):
        body["user_id"], body["project_id"] = m.user_id, m.project_id
    return body


def server_migration(m: MigrationView, v: APIVersion) -> Json:
    memory = m.memory_total_bytes
    disk = m.disk_total_bytes
    body: Json = {"id": m.id, "server_uuid": m.instance_uuid, "status": m.status,
                  "source_node": m.source_compute, "source_compute": m.source_compute,
                  "dest_node": m.dest_compute, "dest_compute": m.dest_compute, "dest_host": m.dest_host,
                  # Paused mode copies everything in one go: what was sent is all there was.
                  "memory_total_bytes": memory, "memory_processed_bytes": memory,
                  "memory_remaining_bytes": 0 if memory is not None else None,
                  "disk_total_bytes": disk, "disk_processed_bytes": disk,
                  "disk_remaining_bytes": 0 if disk is not None else None,
                  "created_at": _naive(m.created_at), "updated_at": _naive(m.updated_at)}
    if v.at_least("2.59"):
        body["uuid"] = m.uuid
    if v.at_least("2.80"):
        body["user_id"], body["project_id"] = m.user_id, m.project_id
    return body


@router.get("/os-migrations")
def list_migrations(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    """Every migration, newest first (admins); filters host, status, migration_type, instance_uuid."""
    q = request.query_params
    limit: int | None = None
    marker: str | None = None
    if v.at_least("2.59"):
        limit, marker = paging(q.get("limit"), q.get("marker"))
    f = MigrationFilters(host=q.get("host") or None, status=q.get("status") or None,
                         migration_type=q.get("migration_type") or None,
                         instance_uuid=q.get("instance_uuid") or None, limit=limit, marker=marker)
    found = svc.migrations.list_all(ctx, f)
    base = svc.config.server.base_url
    body: Json = {"migrations": [os_migration(m, v, base) for m in found]}
    if limit is not None and found and len(found) == limit:
        query = urlencode({**dict(q), "marker": found[-1].uuid})
        body["migrations_links"] = [{"rel": "next", "href": f"{base}{request.url.path}?{query}"}]
    return body


def _since(v: APIVersion, version: str) -> None:
    if not v.at_least(version):
        raise NotFound("The resource could not be found.")


@router.get(SERVER)
def list_server_migrations(server_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _since(v, "2.23")
    return {"migrations": [server_migration(m, v) for m in svc.migrations.in_progress(ctx, server_id)]}


@router.get(SERVER + "/{migration_id}")
def show_server_migration(server_id: str, migration_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _since(v, "2.23")
    return {"migration": server_migration(svc.migrations.show(ctx, server_id, migration_id), v)}


@router.delete(SERVER + "/{migration_id}", status_code=202)
def abort_server_migration(server_id: str, migration_id: str, ctx: Ctx, svc: Svc, v: Version) -> Response:
    _since(v, "2.24")
    svc.migrations.abort(ctx, server_id, migration_id)
    return Response(status_code=202)


@router.post(SERVER + "/{migration_id}/action")
async def server_migration_action(server_id: str, migration_id: str, request: Request, ctx: Ctx, svc: Svc,
                                  v: Version) -> Response:
    _since(v, "2.22")
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("Malformed request body: not JSON.") from exc
    if not isinstance(body, dict) or set(body) != {"force_complete"} or body["force_complete"] is not None:
        raise BadRequest("Invalid input for field/attribute force_complete.")
    await run_in_threadpool(svc.migrations.force_complete, ctx, server_id, migration_id)
    return Response(status_code=202)
