"""The launch dialog and a server's page: launching (and the API's refusals), the fault of a server
in ERROR, the live console log, the actions, and the 404 and 403 rules."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.functional.compute.test_flavors_keypairs_quotas import ED25519
from tests.functional.compute.test_servers import body, wait_for
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers
from yunstack.compute.fake import FakeDriver

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2


def only_server(nova: Any) -> dict[str, Any]:
    servers = nova.get("/servers").json()["servers"]
    assert len(servers) == 1, servers
    return dict(servers[0])


def test_the_launch_dialog_offers_images_and_flavors_and_launches(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances").text
    assert 'id="launch"' in page and f"{D}/project/instances/launch/form" in page
    form = alice.http.get(f"{D}/project/instances/launch/form", headers={"HX-Request": "true"})
    assert form.status_code == 200 and "<html" not in form.text
    assert "cirros" in form.text and f'value="{dash["image"]}"' in form.text and 'name="flavor_id"' in form.text
    r = alice.http.post(f"{D}/project/instances/launch", data={
        "csrf_token": alice.csrf(), "name": "web", "image_id": dash["image"], "flavor_id": "42", "source": "image",
        "volume_gib": "1", "key_name": "", "server_group_id": "", "user_data": "#!/bin/sh\necho hi", "count": "1"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances", r.text
    server = wait_for(dash["alice"], only_server(dash["alice"])["id"], "ACTIVE")
    assert server["name"] == "web"
    page = alice.http.get(f"{D}/project/instances").text
    assert "Launching web." in page and f"{D}/project/instances/{server['id']}" in page


def test_a_launch_the_api_refuses_shows_its_message_and_keeps_the_form(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/instances/launch", data={
        "csrf_token": alice.csrf(), "name": "keep-me", "image_id": dash["image"], "flavor_id": "no-such-flavor",
        "source": "image", "count": "1"})
    assert r.status_code == 400, r.text
    assert 'class="error" role="alert">Invalid flavorRef provided.</p>' in r.text, r.text
    assert 'value="keep-me"' in r.text
    r = alice.http.post(f"{D}/project/instances/launch", data={
        "csrf_token": alice.csrf(), "name": "x", "image_id": dash["image"], "flavor_id": "42", "count": "0"})
    assert r.status_code == 400 and "Count must be from 1 to 100." in r.text
    assert dash["alice"].get("/servers").json()["servers"] == []


def test_a_launch_without_the_csrf_token_or_by_a_reader_is_refused(dash: dict[str, Any]) -> None:
    data = {"name": "x", "image_id": dash["image"], "flavor_id": "42", "count": "1"}
    alice = dash["browser"]("alice")
    assert alice.http.post(f"{D}/project/instances/launch", data=data).status_code == 403
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/instances").text
    assert 'id="launch"' not in page
    r = rita.http.post(f"{D}/project/instances/launch", data={**data, "csrf_token": rita.csrf()})
    assert r.status_code == 403 and "reader" in r.text
    assert dash["alice"].get("/servers").json()["servers"] == []


def test_booting_from_a_new_volume_and_several_at_once(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/instances/launch", data={
        "csrf_token": alice.csrf(), "name": "vb", "image_id": dash["image"], "flavor_id": "42", "source": "volume",
        "volume_gib": "1", "count": "2"})
    assert r.status_code == 303, r.text
    servers = dash["alice"].get("/servers").json()["servers"]
    assert sorted(s["name"] for s in servers) == ["vb-1", "vb-2"]
    for s in servers:
        server = wait_for(dash["alice"], s["id"], "ACTIVE")
        assert server["image"] == "" and server["os-extended-volumes:volumes_attached"]


def test_a_server_the_scheduler_could_not_place_shows_its_fault_in_the_list(dash: dict[str, Any]) -> None:
    h = dash["host"]
    h.start(FakeDriver(hostname=h.driver.hostname, memory_mib=1024))
    sid = dash["alice"].post("/servers", body(dash, "big", flavor="2")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ERROR")
    page = dash["browser"]("alice").http.get(f"{D}/project/instances").text
    fault = re.search(r'<div class="fault">([^<]+)', page)
    assert fault and "No valid host was found." in fault.group(1), page
    assert f"{h.driver.hostname}: RamFilter: needs 2048 MiB" in fault.group(1)


def test_a_servers_page_shows_it_its_console_and_its_actions(dash: dict[str, Any]) -> None:
    sid = dash["alice"].post("/servers", body(dash, "<b>vm</b>")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    alice = dash["browser"]("alice")
    r = alice.http.get(f"{D}/project/instances/{sid}")
    assert r.status_code == 200 and sid in r.text and "&lt;b&gt;vm&lt;/b&gt;" in r.text and "<b>vm" not in r.text
    assert_secure_headers(r)
    for verb in ("stop", "reboot", "pause", "suspend", "delete", "snapshot"):
        assert f"{D}/project/instances/{sid}/{verb}" in r.text
    assert f'hx-get="{D}/project/instances/{sid}/console"' in r.text
    console = alice.http.get(f"{D}/project/instances/{sid}/console", headers={"HX-Request": "true"})
    assert "YUNSTACK-READY" in console.text and 'hx-trigger="every 2s"' in console.text
    r = alice.http.post(f"{D}/project/instances/{sid}/pause", data={"csrf_token": alice.csrf(), "next": "detail"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances/{sid}"
    wait_for(dash["alice"], sid, "PAUSED")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert "Pausing the server." in page and f"{sid}/unpause" in page
    r = alice.http.post(f"{D}/project/instances/{sid}/snapshot", data={"csrf_token": alice.csrf(), "name": "snap"})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert "Creating the image snap" in page, page


def test_attaching_and_detaching_a_volume_from_the_servers_page(dash: dict[str, Any], api: Any) -> None:
    sid = dash["alice"].post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    h = {"X-Auth-Token": dash["alice"].token}
    vol = api.http.post("/volume/v3/volumes", json={"volume": {"size": 1, "name": "data"}}, headers=h).json()["volume"]
    base.servers.until(lambda: api.http.get(f"/volume/v3/volumes/{vol['id']}", headers=h)
                       .json()["volume"]["status"] == "available")
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert f'<option value="{vol["id"]}">data (1 GiB)</option>' in page
    r = alice.http.post(f"{D}/project/instances/{sid}/attach",
                        data={"csrf_token": alice.csrf(), "volume_id": vol["id"]})
    assert r.status_code == 303
    base.servers.until(lambda: api.http.get(f"/volume/v3/volumes/{vol['id']}", headers=h)
                       .json()["volume"]["status"] == "in-use")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert "Attaching the volume." in page and f"{sid}/detach" in page
    r = alice.http.post(f"{D}/project/instances/{sid}/detach",
                        data={"csrf_token": alice.csrf(), "volume_id": vol["id"]})
    assert r.status_code == 303
    base.servers.until(lambda: api.http.get(f"/volume/v3/volumes/{vol['id']}", headers=h)
                       .json()["volume"]["status"] == "available")


def test_another_projects_server_is_a_404_page_and_a_reader_sees_no_actions(dash: dict[str, Any]) -> None:
    theirs = dash["bob"].post("/servers", body(dash, "beta-vm")).json()["server"]["id"]
    mine = dash["alice"].post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(dash["alice"], mine, "ACTIVE")
    alice = dash["browser"]("alice")
    r = alice.http.get(f"{D}/project/instances/{theirs}")
    assert r.status_code == 404 and "beta-vm" not in r.text
    r = alice.http.post(f"{D}/project/instances/{theirs}/stop", data={"csrf_token": alice.csrf()})
    assert r.status_code == 404
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/instances/{mine}").text
    assert "vm" in page and "<form method=\"post\" action=\"/dashboard/project/instances/" not in page
    for verb in ("stop", "snapshot", "attach"):
        r = rita.http.post(f"{D}/project/instances/{mine}/{verb}", data={"csrf_token": rita.csrf(), "name": "x"})
        assert r.status_code == 403 and "reader" in r.text
    assert dash["alice"].get(f"/servers/{mine}").json()["server"]["status"] == "ACTIVE"


def test_launching_with_a_network_key_pair_security_group_and_server_group(dash: dict[str, Any]) -> None:
    api, h = dash["api"], {"X-Auth-Token": dash["alice"].token}
    net = api.http.post("/networking/v2.0/networks", json={"network": {"name": "inside"}}, headers=h).json()
    net_id = net["network"]["id"]
    r = api.http.post("/networking/v2.0/subnets", headers=h, json={"subnet": {
        "network_id": net_id, "cidr": "10.40.0.0/24", "ip_version": 4}})
    assert r.status_code == 201, r.text
    r = api.http.post("/networking/v2.0/security-groups", json={"security_group": {"name": "web"}}, headers=h)
    assert r.status_code == 201, r.text
    assert dash["alice"].post("/os-keypairs", {"keypair": {"name": "kp", "public_key": ED25519}}).status_code == 200
    group = dash["alice"].post("/os-server-groups", {"server_group": {"name": "g", "policies": ["affinity"]}})
    group_id = group.json()["server_group"]["id"]
    alice = dash["browser"]("alice")
    form = alice.http.get(f"{D}/project/instances/launch").text
    for value in (net_id, "kp", "web", group_id):
        assert f'<option value="{value}"' in form, value
    r = alice.http.post(f"{D}/project/instances/launch", data={
        "csrf_token": alice.csrf(), "name": "full", "image_id": dash["image"], "flavor_id": "42", "source": "image",
        "network_ids": [net_id], "key_name": "kp", "security_groups": ["web", "default"],
        "server_group_id": group_id, "user_data": "#cloud-config\n", "count": "1"})
    assert r.status_code == 303, r.text
    server = wait_for(dash["alice"], only_server(dash["alice"])["id"], "ACTIVE")
    assert server["key_name"] == "kp"
    assert sorted(g["name"] for g in server["security_groups"]) == ["default", "web"]
    assert server["addresses"]["inside"][0]["addr"].startswith("10.40.0.")
    members = dash["alice"].get(f"/os-server-groups/{group_id}").json()["server_group"]["members"]
    assert members == [server["id"]]
    page = alice.http.get(f"{D}/project/instances/{server['id']}").text
    assert "10.40.0." in page and "kp" in page and "web" in page


def test_resizing_from_the_servers_page_then_confirming_and_reverting(dash: dict[str, Any]) -> None:
    nova = dash["alice"].at("2.47")
    sid = nova.post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(nova, sid, "ACTIVE")
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    form = re.search(r'id="resize">(.*?)</form>', page, re.S)
    assert form and '<option value="84">' in form.group(1) and '<option value="42">' not in form.group(1), page
    r = alice.http.post(f"{D}/project/instances/{sid}/resize", data={"csrf_token": alice.csrf(), "flavor_id": "84"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances/{sid}"
    assert "Resizing the server" in alice.http.get(r.headers["location"]).text
    wait_for(nova, sid, "VERIFY_RESIZE")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert 'id="resize"' not in page and ">Confirm resize</button>" in page and ">Revert resize</button>" in page
    r = alice.http.post(f"{D}/project/instances/{sid}/confirm-resize",
                        data={"csrf_token": alice.csrf(), "next": "detail"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances/{sid}"
    assert "Confirming the resize of the server." in alice.http.get(r.headers["location"]).text
    assert wait_for(nova, sid, "ACTIVE")["flavor"]["ram"] == 192
    r = alice.http.post(f"{D}/project/instances/{sid}/resize", data={"csrf_token": alice.csrf(), "flavor_id": "42"})
    assert r.status_code == 303
    wait_for(nova, sid, "VERIFY_RESIZE")
    r = alice.http.post(f"{D}/project/instances/{sid}/revert-resize",
                        data={"csrf_token": alice.csrf(), "next": "detail"})
    assert r.status_code == 303
    assert "Reverting the resize of the server." in alice.http.get(r.headers["location"]).text
    server = wait_for(nova, sid, "ACTIVE")
    assert (server["flavor"]["ram"], server["flavor"]["original_name"]) == (192, "m1.micro")


def test_a_resize_the_api_refuses_shows_its_message_with_each_hosts_reason(dash: dict[str, Any]) -> None:
    h = dash["host"]
    h.start(FakeDriver(hostname=h.driver.hostname, memory_mib=1024))
    sid = dash["alice"].post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/instances/{sid}/resize", data={"csrf_token": alice.csrf(), "flavor_id": "42"})
    assert r.status_code == 303
    page = alice.http.get(r.headers["location"]).text
    assert 'class="error" role="status">When resizing, instances must change flavor!</p>' in page, page
    r = alice.http.post(f"{D}/project/instances/{sid}/resize", data={"csrf_token": alice.csrf(), "flavor_id": "2"})
    assert r.status_code == 303
    message = re.search(r'class="error" role="status">([^<]+)</p>', alice.http.get(r.headers["location"]).text)
    assert message and message.group(1).startswith("No valid host was found."), message
    assert f"{h.driver.hostname}: RamFilter: needs 1920 MiB" in message.group(1)  # the growth
    r = alice.http.post(f"{D}/project/instances/{sid}/resize", data={"csrf_token": alice.csrf(), "flavor_id": ""})
    assert "Choose a flavor." in alice.http.get(r.headers["location"]).text
    assert wait_for(dash["alice"], sid, "ACTIVE")["flavor"]["id"] == "42"


def _network(dash: dict[str, Any], name: str, cidr: str) -> str:
    api, h = dash["api"], {"X-Auth-Token": dash["alice"].token}
    net_id = str(api.http.post("/networking/v2.0/networks", json={"network": {"name": name}},
                               headers=h).json()["network"]["id"])
    r = api.http.post("/networking/v2.0/subnets", headers=h, json={"subnet": {
        "network_id": net_id, "cidr": cidr, "ip_version": 4}})
    assert r.status_code == 201, r.text
    return net_id


def test_attaching_and_detaching_an_interface_from_the_servers_page(dash: dict[str, Any]) -> None:
    net_id = _network(dash, "inside", "10.50.0.0/24")
    nova = dash["alice"]
    sid = nova.post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(nova, sid, "ACTIVE")
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert "No interfaces." in page
    form = re.search(r'id="attach-interface">(.*?)</form>', page, re.S)
    assert form and f'<option value="{net_id}">inside 10.50.0.0/24</option>' in form.group(1), page
    r = alice.http.post(f"{D}/project/instances/{sid}/interfaces/attach",
                        data={"csrf_token": alice.csrf(), "network_id": net_id})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances/{sid}"
    listed = nova.get(f"/servers/{sid}/os-interface").json()["interfaceAttachments"]
    assert len(listed) == 1 and listed[0]["net_id"] == net_id
    port_id, address = listed[0]["port_id"], listed[0]["fixed_ips"][0]["ip_address"]
    page = alice.http.get(r.headers["location"]).text
    assert f"Attaching an interface ({address})." in page and f"{address} on inside" in page
    assert f'name="port_id" value="{port_id}"' in page
    wait_for(nova, sid, "ACTIVE")  # the host's report ends the attach; a detach before it is a 409
    r = alice.http.post(f"{D}/project/instances/{sid}/interfaces/detach",
                        data={"csrf_token": alice.csrf(), "port_id": port_id})
    assert r.status_code == 303
    assert "Detaching the interface." in alice.http.get(r.headers["location"]).text
    base.servers.until(lambda: nova.get(f"/servers/{sid}/os-interface").json()["interfaceAttachments"] == [])
    assert "No interfaces." in alice.http.get(f"{D}/project/instances/{sid}").text
    r = alice.http.post(f"{D}/project/instances/{sid}/interfaces/attach",
                        data={"csrf_token": alice.csrf(), "network_id": "no-such-network"})
    assert r.status_code == 303
    assert 'class="error" role="status">' in alice.http.get(r.headers["location"]).text


def test_resize_and_interfaces_are_refused_without_csrf_to_readers_and_for_another_projects_server(
        dash: dict[str, Any]) -> None:
    net_id = _network(dash, "inside", "10.51.0.0/24")
    theirs = dash["bob"].post("/servers", body(dash, "beta-vm")).json()["server"]["id"]
    mine = dash["alice"].post("/servers", body(dash, "vm", networks=[{"uuid": net_id}])).json()["server"]["id"]
    wait_for(dash["alice"], mine, "ACTIVE")
    port_id = dash["alice"].get(f"/servers/{mine}/os-interface").json()["interfaceAttachments"][0]["port_id"]
    posts = {"resize": {"flavor_id": "84"}, "interfaces/attach": {"network_id": net_id},
             "interfaces/detach": {"port_id": port_id}}
    alice = dash["browser"]("alice")
    for path, data in posts.items():
        assert alice.http.post(f"{D}/project/instances/{mine}/{path}", data=data).status_code == 403
        r = alice.http.post(f"{D}/project/instances/{theirs}/{path}", data={**data, "csrf_token": alice.csrf()})
        assert r.status_code == 404 and "beta-vm" not in r.text, path
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/instances/{mine}").text
    assert "10.51.0." in page and "on inside" in page  # a reader sees the interfaces, without their buttons
    assert 'id="resize"' not in page and 'id="attach-interface"' not in page and "interfaces/detach" not in page
    for path, data in posts.items():
        r = rita.http.post(f"{D}/project/instances/{mine}/{path}", data={**data, "csrf_token": rita.csrf()})
        assert r.status_code == 403 and "reader" in r.text, path
    assert wait_for(dash["alice"].at("2.47"), mine, "ACTIVE")["flavor"]["ram"] == 128
    assert [a["port_id"] for a in dash["alice"].get(f"/servers/{mine}/os-interface").json()["interfaceAttachments"]
            ] == [port_id]
    assert dash["bob"].get(f"/servers/{theirs}/os-interface").json()["interfaceAttachments"] == []


def test_the_status_poll_answers_the_status_and_buttons_from_the_server_alone(dash: dict[str, Any]) -> None:
    nova = dash["alice"].at("2.47")
    sid = nova.post("/servers", body(dash, "vm")).json()["server"]["id"]
    wait_for(nova, sid, "ACTIVE")
    alice = dash["browser"]("alice")
    assert 'id="resize"' in alice.http.get(f"{D}/project/instances/{sid}").text  # the whole page has the forms
    polled = alice.http.get(f"{D}/project/instances/{sid}?part=status")
    assert polled.status_code == 200
    status = re.search(r'id="server-status".*?</div>', polled.text, re.S)
    assert status and "ACTIVE" in status.group(0)
    assert f'action="{D}/project/instances/{sid}/stop"' in polled.text  # the buttons the poll swaps in
    assert 'id="resize"' not in polled.text  # the forms' choices were not fetched
    assert alice.http.get(f"{D}/project/instances/{uuid.uuid4()}?part=status").status_code == 404
