"""Server actions' wire format: the registry's verbs (``start``) and the verbs with their own handlers.

``start`` runs any verb of ``compute.operations``: its body model, then ``ComputeService.action``,
then its status (or its own response, as createImage's image id).  ``HANDLERS`` maps the verbs
whose bodies or use cases are their own (lock, unlock, rebuild, rescue, shelve, unshelve, evacuate) to a
handler; ``servers._do_action`` looks there first.  Bodies are checked the way Nova's JSON schemas
check them (unknown keys are 400), responses are Nova's: 202 with no body, except rebuild (202, the
server in the update view plus ``adminPass``, and a Location header), rescue (200,
``{"adminPass": ...}``), evacuate (200, with ``adminPass`` below 2.14), confirmResize (204) and
createImage (a Location, and the image id from 2.45).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from yunstack.api.compute import migrations, server_update
from yunstack.api.compute.microversion import APIVersion
from yunstack.compute import operations
from yunstack.compute.evacuate import Evacuate
from yunstack.compute.lifecycle import Rebuild
from yunstack.compute.operations import Operation
from yunstack.errors import BadRequest
from yunstack.identity.context import AuthContext
from yunstack.wiring import Services

Json = dict[str, Any]
Handler = Callable[[Services, AuthContext, APIVersion, str, Any, str], Response]


def _no_args(name: str, args: Any) -> None:
    if args not in (None, {}):
        raise BadRequest("Invalid input for field/attribute {name}. Value: {value}. {value} is not of type "
                         "'null'", name=name, value=args)


def _object(name: str, args: Any, allowed: set[str]) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute {name}. Value: {value}. {value} is not of type "
                         "'object'", name=name, value=args)
    extra = sorted(set(args) - allowed)
    if extra:
        raise BadRequest("Additional properties are not allowed ({keys} were unexpected)",
                         keys=", ".join(repr(k) for k in extra))
    return args


def _string(field: str, value: Any, *, min_length: int = 0, max_length: int = 255) -> str:
    if not isinstance(value, str) or not min_length <= len(value) <= max_length:
        raise BadRequest("Invalid input for field/attribute {field}. Value: {value}.", field=field, value=value)
    return value


def _lock(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    # Before 2.73 Nova reads no body for lock; locked_reason arrives with 2.73, past our maximum.
    svc.compute.lock(ctx, server_id, rid)
    return Response(status_code=202)


def _unlock(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    svc.compute.unlock(ctx, server_id, rid)
    return Response(status_code=202)


def _rebuild(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    allowed = {"imageRef", "name", "adminPass", "metadata", "preserve_ephemeral", "OS-DCF:diskConfig",
               "accessIPv4", "accessIPv6", "personality"}
    if v.at_least("2.19"):
        allowed.add("description")
    body = _object("rebuild", args, allowed)
    if "imageRef" not in body:
        raise BadRequest("Invalid input for field/attribute rebuild. 'imageRef' is a required property")
    image = _string("imageRef", body["imageRef"], min_length=1)
    if body.get("personality"):
        raise BadRequest("File injection (personality) is not supported; use user_data.")
    name = body.get("name")
    if name is not None and not _string("name", name, min_length=1).strip():
        raise BadRequest("Invalid input for field/attribute name. Value: {value}.", value=name)
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(x, str) for x in metadata.values())):
        raise BadRequest("Invalid input for field/attribute metadata. Value: {value}.", value=metadata)
    ephemeral = body.get("preserve_ephemeral", False)
    if not isinstance(ephemeral, bool):
        raise BadRequest("Invalid input for field/attribute preserve_ephemeral. Value: {value}.",
                         value=ephemeral)
    if body.get("OS-DCF:diskConfig", "MANUAL") not in ("AUTO", "MANUAL"):
        raise BadRequest("Invalid input for field/attribute OS-DCF:diskConfig.")
    password = body.get("adminPass")
    description = body.get("description")
    for field in ("accessIPv4", "accessIPv6"):
        if field in body:
            _string(field, body[field])
    access = server_update.access_addresses(body.get("accessIPv4"), body.get("accessIPv6"))
    req = Rebuild(
        image_id=image, name=name, metadata=metadata,
        access_ipv4=access[0], access_ipv6=access[1],
        description=None if description is None else _string("description", description),
        clear_description="description" in body and description is None,
        admin_pass=None if password is None else _string("adminPass", password, max_length=4096),
        preserve_ephemeral=ephemeral)
    server = svc.compute.rebuild(ctx, server_id, req, rid)
    base = svc.config.server.base_url
    view = server_update.updated(base, server, v, ctx)  # Nova answers rebuild in the update view
    view["adminPass"] = server.admin_pass
    return JSONResponse({"server": view}, status_code=202,
                        headers={"Location": f"{base}/compute/v2.1/servers/{server.id}"})


def _rescue(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    body = _object("rescue", args, {"adminPass", "rescue_image_ref"})
    password = body.get("adminPass")
    ref = body.get("rescue_image_ref")
    result = svc.compute.rescue(ctx, server_id, rid,
                                admin_pass=None if password is None else _string("adminPass", password),
                                rescue_image_ref=None if ref is None else _string("rescue_image_ref", ref,
                                                                                   min_length=1))
    return JSONResponse({"adminPass": result}, status_code=200)


_TRUE = {"true", "1", "on", "yes", "y", "t"}
_FALSE = {"false", "0", "off", "no", "n", "f"}


def _boolean(field: str, value: Any) -> bool:
    """Nova's ``parameter_types.boolean``: a JSON boolean or one of its spellings as a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise BadRequest("Invalid input for field/attribute {field}. Value: {value}.", field=field, value=value)


def _evacuate(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
    """Nova's evacuate: 200; below 2.14 ``onSharedStorage`` is required and the password is returned."""
    allowed = {"host", "adminPass"} | ({"onSharedStorage"} if not v.at_least("2.14") else set())
    if v.at_least("2.29"):
        allowed.add("force")
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute evacuate. Value: {value}. {value} is not of type "
                         "'object'", value=args)
    body = _object("evacuate", args, allowed)
    shared = False
    if not v.at_least("2.14"):
        if "onSharedStorage" not in body:
            raise BadRequest("Invalid input for field/attribute evacuate. 'onSharedStorage' is a required "
                             "property")
        shared = _boolean("onSharedStorage", body["onSharedStorage"])
    host = None if body.get("host") is None else _string("host", body["host"], min_length=1)
    password = None if "adminPass" not in body else _string("adminPass", body["adminPass"], max_length=4096)
    if shared and password is not None:
        raise BadRequest("admin password can't be changed on existing disk")
    force = _boolean("force", body["force"]) if "force" in body else False
    if force and host is None:
        raise BadRequest("Can't force to a non-provided destination")
    result = svc.compute.evacuate(ctx, server_id, Evacuate(host=host, admin_pass=password,
                                                           on_shared_storage=shared, force=force), rid)
    if v.at_least("2.14"):
        return Response(status_code=200)
    return JSONResponse({"adminPass": result}, status_code=200)


def _simple(method: str) -> Handler:
    def handle(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, args: Any, rid: str) -> Response:
        _no_args(method, args)
        getattr(svc.compute, method)(ctx, server_id, rid)
        return Response(status_code=202)

    return handle


HANDLERS: dict[str, Handler] = {
    "lock": _lock,
    "unlock": _unlock,
    "rebuild": _rebuild,
    "rescue": _rescue,
    "shelve": _simple("shelve"),  # creates the shelve image first
    "unshelve": _simple("unshelve"),  # may schedule the server again
    "evacuate": _evacuate,  # admin only: rebuilds the server on another host once its own is down
    "os-migrateLive": migrations.live_migrate,  # its body's rules change with the microversion
}


def _image_created(svc: Services, v: APIVersion, result: Mapping[str, str]) -> Response:
    location = f"{svc.config.server.base_url}/image/v2/images/{result['image_id']}"
    if v.at_least("2.45"):
        return JSONResponse({"image_id": result["image_id"]}, status_code=202, headers={"Location": location})
    return Response(status_code=202, headers={"Location": location})


# Operations whose response says more than their status.
_RESPONSES: dict[str, Callable[[Services, APIVersion, Mapping[str, str]], Response]] = {
    "snapshot": _image_created}


def start(svc: Services, ctx: AuthContext, v: APIVersion, server_id: str, decl: Operation, args: Any,
          rid: str) -> Response:
    """Start a registry operation from its ``/action`` body."""
    body = operations.parse_body(decl, args)
    assert decl.action is not None
    result = svc.compute.action(ctx, server_id, decl.action, rid, body)
    respond = _RESPONSES.get(decl.name)
    return respond(svc, v, result) if respond is not None else Response(status_code=decl.status)
