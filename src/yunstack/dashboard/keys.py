"""The key pairs page (create: the private key is downloaded once and kept nowhere; import a
public key; delete) and the security groups page (groups and their rules)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.keypairs import create_keypair, delete_keypair, import_keypair, list_keypairs
from yunstack.client.networks import (
    add_rule,
    create_security_group,
    delete_rule,
    delete_security_group,
    list_security_groups,
)
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, change, number, show

KEYS = "/project/keypairs"
GROUPS = "/project/security-groups"


async def keypairs(request: Request) -> Response:
    return await show(request, "keypairs.html", "keypairs", lambda s: {"keypairs": list_keypairs(s.client)},
                      {"keypairs": []})


async def create_key(request: Request) -> Response:
    """The answer is the private key itself, as a download: the API returns it once and the
    dashboard keeps no copy (not in the session, not in a page), so it cannot be shown again."""

    def act(session: Session, form: Form) -> str | Response:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A key pair needs a name.")
        made = create_keypair(session.client, name)
        session.flash = ("note", f"Created the key pair {made.name}; its private key was downloaded as "
                                 "the only copy.")
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", made.name) + ".pem"
        return Response(made.private_key, media_type="application/x-pem-file",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})

    return await change(request, KEYS, act)


async def import_key(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name, public_key = form.get("name", "").strip(), form.get("public_key", "").strip()
        if not name or not public_key:
            raise ValueError("Give the key pair a name and paste its public key.")
        made = import_keypair(session.client, name, public_key)
        return f"Imported the key pair {made.name} ({made.fingerprint})."

    return await change(request, KEYS, act)


async def delete_key(request: Request) -> Response:
    name = request.path_params["name"]

    def act(session: Session, form: Form) -> str:
        delete_keypair(session.client, name)
        return f"Deleted the key pair {name}."

    return await change(request, KEYS, act)


def _groups(session: Session) -> dict[str, Any]:
    return {"groups": list_security_groups(session.client)}


async def groups(request: Request) -> Response:
    return await show(request, "security_groups.html", "security-groups", _groups, {"groups": []})


async def create_group(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A security group needs a name.")
        create_security_group(session.client, name, form.get("description", "").strip())
        return f"Created the security group {name}."

    return await change(request, GROUPS, act)


async def delete_group(request: Request) -> Response:
    group_id = request.path_params["group_id"]

    def act(session: Session, form: Form) -> str:
        delete_security_group(session.client, group_id)
        return "Deleted the security group."

    return await change(request, GROUPS, act)


async def create_rule(request: Request) -> Response:
    group_id = request.path_params["group_id"]

    def act(session: Session, form: Form) -> str:
        protocol = form.get("protocol", "")
        ports = form.get("port_min", "").strip()
        low = number(form, "port_min", "The first port", 1, 65535) if ports else None
        high = number(form, "port_max", "The last port", 1, 65535) if form.get("port_max", "").strip() else low
        add_rule(session.client, group_id, direction=form.get("direction", "ingress"), protocol=protocol,
                 port_min=low, port_max=high, remote_ip_prefix=form.get("remote_ip_prefix", "").strip())
        return "Added the rule."

    return await change(request, GROUPS, act)


async def remove_rule(request: Request) -> Response:
    rule_id = request.path_params["rule_id"]

    def act(session: Session, form: Form) -> str:
        delete_rule(session.client, rule_id)
        return "Removed the rule."

    return await change(request, GROUPS, act)
