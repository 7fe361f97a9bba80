"""The instances pages beyond the list: the launch dialog, a server's page with its live console
log, and the server actions (power, snapshot, resize, volumes, interfaces, a floating IP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client import ApiError
from yunstack.client.images import list_images
from yunstack.client.keypairs import list_keypairs
from yunstack.client.networks import (
    list_floating_ips,
    list_networks,
    list_security_groups,
    list_server_ports,
)
from yunstack.client.servers import (
    ACTIONS,
    Action,
    Launch,
    attach_interface,
    attach_volume,
    console_output,
    create_image,
    detach_interface,
    detach_volume,
    flavors,
    get_server,
    launch,
    list_interfaces,
    resize,
    server_action,
    server_groups,
)
from yunstack.client.volumes import list_volumes
from yunstack.dashboard import floating_ips
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import (
    NO_PROJECT,
    READER_REFUSED,
    Form,
    _call,
    _dashboard,
    _ended,
    _page,
    _post,
    _redirect,
    _session,
    change,
    number,
    show,
)

LIST = "/project/instances"
DONE = {"start": "Starting", "stop": "Stopping", "reboot": "Rebooting", "pause": "Pausing",
        "unpause": "Unpausing", "suspend": "Suspending", "resume": "Resuming",
        "confirm-resize": "Confirming the resize of", "revert-resize": "Reverting the resize of",
        "delete": "Deleting"}


def _choices(session: Session) -> dict[str, Any]:
    client = session.client
    return {"images": list_images(client, active_only=True), "flavors": flavors(client),
            "networks": [n for n in list_networks(client) if not n.external or n.shared],
            "keypairs": list_keypairs(client), "security_groups": list_security_groups(client),
            "server_groups": server_groups(client)}


NO_CHOICES: dict[str, Any] = {"images": [], "flavors": [], "networks": [], "keypairs": [], "security_groups": [],
                              "server_groups": []}


async def launch_page(request: Request) -> Response:
    """The launch form as a page of its own (without JavaScript, and after a refused launch)."""
    values = {"image_id": request.query_params.get("image_id", "")}  # the images page's Launch link
    return await show(request, "launch.html", "instances", lambda s: {**_choices(s), "values": values},
                      {**NO_CHOICES, "values": values})


async def launch_form(request: Request) -> Response:
    """The launch form alone: the instances page's dialog loads it when opened."""
    session = _session(request)
    if session is None:
        return _ended(request)
    dashboard = _dashboard(request)
    if session.scope.project_id is None:
        return dashboard.render("_launch_form.html", **NO_CHOICES, values={}, error=NO_PROJECT, **_page(session))
    try:
        choices = await _call(request, session, lambda: _choices(session))
    except ApiError as exc:
        return dashboard.render("_launch_form.html", **NO_CHOICES, values={}, error=exc.message, **_page(session))
    if isinstance(choices, Response):
        return choices
    return dashboard.render("_launch_form.html", **choices, values={}, error=None, **_page(session))


def _spec(form: Form) -> Launch:
    name = form.get("name", "").strip()
    if not name:
        raise ValueError("A server needs a name.")
    if not form.get("image_id") or not form.get("flavor_id"):
        raise ValueError("Choose an image and a flavor.")
    boot_volume = form.get("source") == "volume"
    return Launch(name=name, image_id=form["image_id"], flavor_id=form["flavor_id"],
                  volume_gib=number(form, "volume_gib", "The volume's size (GiB)", 1, 16384) if boot_volume else 0,
                  network_ids=tuple(n for n in form.lists.get("network_ids", []) if n),
                  key_name=form.get("key_name", ""),
                  security_groups=tuple(g for g in form.lists.get("security_groups", []) if g),
                  user_data=form.get("user_data", "").replace("\r\n", "\n"),
                  server_group_id=form.get("server_group_id", ""), count=number(form, "count", "Count", 1, 100))


async def launch_post(request: Request) -> Response:
    """Launch; a refusal (the API's message, or a field the form could not use) shows the form again
    with what was entered."""
    checked = await _post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    dashboard = _dashboard(request)
    if session.scope.reader_only:
        return dashboard.error(403, READER_REFUSED)
    try:
        spec = _spec(form)
        done = await _call(request, session, lambda: launch(session.client, spec))
    except (ApiError, ValueError) as exc:
        error = exc.message if isinstance(exc, ApiError) else str(exc)
        status = exc.status if isinstance(exc, ApiError) and 400 <= exc.status < 500 else 400
        try:
            choices = await _call(request, session, lambda: _choices(session))
        except ApiError:
            choices = NO_CHOICES
        if isinstance(choices, Response):
            return choices
        values = {**form, "network_ids": form.lists.get("network_ids", []),
                  "security_groups": form.lists.get("security_groups", [])}
        # htmx swaps in only 2xx answers: a boosted form gets the page with the error as a 200.
        return dashboard.render("launch.html", 200 if request.headers.get("hx-request") else status,
                                **choices, values=values, error=error, flash=None, **_page(session))
    if isinstance(done, Response):
        return done
    session.flash = ("note", f"Launching {spec.name}" + (f" ({spec.count} servers)." if spec.count > 1 else "."))
    return _redirect(request, LIST)


def _server(session: Session, server_id: str) -> dict[str, Any]:
    client = session.client
    server = get_server(client, server_id)
    volumes = list_volumes(client)
    interfaces = list_interfaces(client, server.id)
    # The forms' choices (floating IPs, flavors, networks): only for someone who may use them.
    may_act = not session.scope.reader_only
    ports = list_server_ports(client, server.id) if may_act else []
    free = [f for f in list_floating_ips(client) if not f.port_id] if ports else []
    # The resize form leaves out the flavor the server has (the API refuses it).
    sizes = [f for f in flavors(client) if f.name != server.flavor] if may_act and server.resizable else []
    networks = list_networks(client) if may_act or interfaces else []
    return {"server": server, "attachable": [v for v in volumes if v.status == "available"],
            "attached": [v for v in volumes if server.id in v.attached_to], "ports": ports, "free_ips": free,
            "flavors": sizes, "interfaces": interfaces, "network_names": {n.id: n.name for n in networks},
            "networks": [n for n in networks if not n.external or n.shared] if may_act else []}


_NOTHING_ELSE: dict[str, Any] = {"attachable": [], "attached": [], "ports": [], "free_ips": [], "flavors": [],
                                 "interfaces": [], "network_names": {}, "networks": []}


async def server_page(request: Request) -> Response:
    server_id = request.path_params["server_id"]
    if request.query_params.get("part") == "status":
        # The page's poll keeps only the status and the action buttons: the server alone, not the
        # six other API calls (volumes, ports, floating IPs, flavors, networks) of the whole page.
        return await show(request, "server.html", "instances",
                          lambda s: {"server": get_server(s.client, server_id), **_NOTHING_ELSE},
                          {"server": None, **_NOTHING_ELSE})
    return await show(request, "server.html", "instances", lambda s: _server(s, server_id),
                      {"server": None, **_NOTHING_ELSE})


async def console(request: Request) -> Response:
    """The console log's last lines: the server's page polls this fragment every 2 s."""
    session = _session(request)
    if session is None:
        return _ended(request)
    server_id = request.path_params["server_id"]
    try:
        output = await _call(request, session, lambda: console_output(session.client, server_id))
    except ApiError as exc:
        output = f"({exc.message})"
    if isinstance(output, Response):
        return output
    return _dashboard(request).render("_console.html", server_id=server_id, output=output)


async def action(request: Request) -> Response:
    verb, server_id = request.path_params["action"], request.path_params["server_id"]
    if verb not in ACTIONS:
        return _dashboard(request).error(404, f"There is no action {verb!r}.")

    def act(session: Session, form: Form) -> str:
        server_action(session.client, server_id, cast(Action, verb))
        return f"{DONE[verb]} the server."

    detail = f"{LIST}/{server_id}"
    return await change(request, lambda form: detail if form.get("next") == "detail" and verb != "delete" else LIST,
                        act)


def on_server(act: Callable[[Session, str, Form], str]) -> Callable[[Request], Awaitable[Response]]:
    """A form posted on a server's page: ``act(session, server_id, form)`` does it and says what it
    did (``change``: CSRF, the reader refusal, the API's refusals); the server's page follows."""

    async def endpoint(request: Request) -> Response:
        server_id = request.path_params["server_id"]
        return await change(request, f"{LIST}/{server_id}", lambda session, form: act(session, server_id, form))

    return endpoint


@on_server
def snapshot(session: Session, server_id: str, form: Form) -> str:
    name = form.get("name", "").strip()
    if not name:
        raise ValueError("A snapshot needs a name.")
    image_id = create_image(session.client, server_id, name)
    return f"Creating the image {name} ({image_id})."


@on_server
def attach(session: Session, server_id: str, form: Form) -> str:
    if not form.get("volume_id"):
        raise ValueError("Choose a volume to attach.")
    attach_volume(session.client, server_id, form["volume_id"])
    return "Attaching the volume."


@on_server
def detach(session: Session, server_id: str, form: Form) -> str:
    detach_volume(session.client, server_id, form.get("volume_id", ""))
    return "Detaching the volume."


@on_server
def resize_post(session: Session, server_id: str, form: Form) -> str:
    if not form.get("flavor_id"):
        raise ValueError("Choose a flavor.")
    resize(session.client, server_id, form["flavor_id"])
    return "Resizing the server: confirm or revert the new size when it is VERIFY_RESIZE."


@on_server
def attach_port(session: Session, server_id: str, form: Form) -> str:
    if not form.get("network_id"):
        raise ValueError("Choose a network.")
    done = attach_interface(session.client, server_id, form["network_id"])
    return f"Attaching an interface ({', '.join(done.fixed_ips) or done.mac})."


@on_server
def detach_port(session: Session, server_id: str, form: Form) -> str:
    if not form.get("port_id"):
        raise ValueError("Choose an interface.")
    detach_interface(session.client, server_id, form["port_id"])
    return "Detaching the interface."


@on_server
def floating_ip(session: Session, server_id: str, form: Form) -> str:
    if not form.get("floating_ip_id") or not form.get("port_id"):
        raise ValueError("Choose a floating IP and a port.")
    get_server(session.client, server_id)  # another project's server: a 404, as for its page
    if form["port_id"] not in {p.id for p in list_server_ports(session.client, server_id)}:
        raise ValueError("That port is not one of this server's.")
    done = floating_ips.associate(session.client, form["floating_ip_id"], form["port_id"])
    return f"Associated the floating IP {done.address} with {done.fixed_ip}."

