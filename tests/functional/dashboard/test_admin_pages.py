"""The admin pages: hosts (enable, disable with a reason, drain), a host's servers, the migrations,
the memory ledger's charts and the balancer; and the same pages and forms as a member tries them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.functional.compute import test_live_migration
from tests.functional.compute.test_live_migration import B, _done, migrations
from tests.functional.compute.test_memory_balancer import report
from tests.functional.compute.test_servers import body, wait_for
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import Browser, D, assert_secure_headers
from yunstack.db.tables import compute as t
from yunstack.types import utcnow
from yunstack.wiring import Services

dash, world, host, qcow2, two = base.dash, base.world, base.host, base.qcow2, test_live_migration.two
MIB = 1 << 20


@pytest.fixture
def admin(dash: dict[str, Any]) -> Iterator[Browser]:
    b = Browser(dash["app"])
    r = b.sign_in("admin", "adminpw")
    assert r.status_code == 303, r.text
    try:
        yield b
    finally:
        b.http.close()


def services(dash: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dash["admin"].get("/os-services").json()["services"]
    return found


def test_the_hosts_page_shows_each_host_with_its_state_and_use(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    page = admin.http.get(f"{D}/admin/hosts")
    assert page.status_code == 200, page.text
    assert_secure_headers(page)
    assert f'href="{D}/admin/hosts" aria-current="page">Admin</a>' in page.text  # the nav's one entry
    row = re.search(rf'<tr id="host-{re.escape(name)}">(.*?)</tr>', page.text, re.S)
    assert row, page.text
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
    assert " up " in cells and " enabled " in cells and " 1 / " in cells  # one vCPU of the flavor in use
    assert f"/admin/hosts/{name}/disable" in row.group(1) and f"/admin/hosts/{name}/drain" in row.group(1)
    servers = admin.http.get(f"{D}/admin/hosts/{name}").text
    assert "alpha-vm" in servers and f"/admin/servers/{sid}/live-migrate" in servers


def test_disabling_a_host_with_a_reason_and_enabling_it_again(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    r = admin.http.post(f"{D}/admin/hosts/{name}/disable", data={"csrf_token": admin.csrf(f"{D}/admin/hosts"),
                                                                 "reason": "new <RAM> sticks"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/hosts"
    [svc] = services(dash)
    assert (svc["status"], svc["disabled_reason"]) == ("disabled", "new <RAM> sticks")
    page = admin.http.get(f"{D}/admin/hosts").text
    assert "new &lt;RAM&gt; sticks" in page and "new <RAM>" not in page
    assert f"/admin/hosts/{name}/enable" in page
    r = admin.http.post(f"{D}/admin/hosts/{name}/enable", data={"csrf_token": admin.csrf(f"{D}/admin/hosts")})
    assert r.status_code == 303
    assert services(dash)[0]["status"] == "enabled" and services(dash)[0]["disabled_reason"] is None
    assert f"Enabled {name}" in admin.http.get(f"{D}/admin/hosts").text


def test_an_unknown_host_is_a_404_page(admin: Browser) -> None:
    r = admin.http.get(f"{D}/admin/hosts/no-such-host")
    assert r.status_code == 404 and "There is no compute host named no-such-host." in r.text


def test_an_admin_form_without_its_csrf_token_changes_nothing(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    r = admin.http.post(f"{D}/admin/hosts/{name}/disable", data={"reason": "x"})
    assert r.status_code == 403
    assert services(dash)[0]["status"] == "enabled"


def test_the_migrations_page_lists_every_migration_with_its_servers_name(dash: dict[str, Any], two: dict[str, Any],
                                                                         admin: Browser) -> None:
    assert "No migrations yet." in admin.http.get(f"{D}/admin/migrations").text
    a, sid = dash["host"].driver.hostname, two["server"]
    servers_page = admin.http.get(f"{D}/admin/hosts/{a}").text
    assert f'<option value="{B}">{B}</option>' in servers_page  # the other host, up and enabled, as a target
    r = admin.http.post(f"{D}/admin/servers/{sid}/live-migrate",
                        data={"csrf_token": admin.csrf(f"{D}/admin/hosts"), "host": B, "back_host": a})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/hosts/{a}"
    assert f"Live-migrating the server to {B}." in admin.http.get(f"{D}/admin/hosts/{a}").text
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    page = admin.http.get(f"{D}/admin/migrations").text
    row = re.search(r'<tr id="migration-\d+">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
    assert "vm live-migration completed" in cells and f"{a} {B}" in cells, cells


def test_evacuating_a_server_whose_host_is_up_shows_the_apis_refusal(dash: dict[str, Any], admin: Browser) -> None:
    a = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    r = admin.http.post(f"{D}/admin/servers/{sid}/evacuate",
                        data={"csrf_token": admin.csrf(f"{D}/admin/hosts"), "host": "", "back_host": a})
    assert r.status_code == 303
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>', admin.http.get(f"{D}/admin/hosts/{a}").text)
    assert shown and a in shown.group(1), shown  # the API's message: the host is still up
    assert wait_for(dash["admin"], sid, "ACTIVE")["OS-EXT-SRV-ATTR:host"] == a


def test_draining_a_host_disables_it_and_live_migrates_its_servers_off(dash: dict[str, Any], two: dict[str, Any],
                                                                       admin: Browser) -> None:
    a = dash["host"].driver.hostname
    r = admin.http.post(f"{D}/admin/hosts/{a}/drain", data={"csrf_token": admin.csrf(f"{D}/admin/hosts"),
                                                             "reason": "kernel update"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/hosts/{a}"
    assert f"Disabled {a} and queued 1 live migration(s) off it." in admin.http.get(f"{D}/admin/hosts/{a}").text
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    by_host = {s["host"]: s for s in services(dash)}
    assert (by_host[a]["status"], by_host[a]["disabled_reason"]) == ("disabled", "kernel update")
    assert by_host[B]["status"] == "enabled"
    assert "No servers on this host." in admin.http.get(f"{D}/admin/hosts/{a}").text


def test_the_operations_page_shows_the_tasks_of_every_host(dash: dict[str, Any], admin: Browser) -> None:
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    tasks = dash["admin"].get("/os-tasks", resource_id=sid).json()["tasks"]
    assert tasks and all(x["state"] == "succeeded" for x in tasks)
    page = admin.http.get(f"{D}/admin/operations")
    assert page.status_code == 200, page.text
    finished = re.search(r'<table id="tasks-finished">(.*?)</table>', page.text, re.S)
    assert finished, page.text
    for x in tasks:
        row = re.search(rf'<tr id="task-{x["id"]}">(.*?)</tr>', finished.group(1), re.S)
        assert row and x["kind"] in row.group(1) and sid in row.group(1) and "succeeded" in row.group(1)
    assert "Nothing is running." in page.text and 'hx-trigger="every 10s"' in page.text


# -- memory: the ledger's charts and the balancer ---------------------------------------------------

def ledger(server_id: str, resident_mib: int) -> dict[str, Any]:
    """One ledger entry, as a host's memory manager reports it (tests/functional/memory/test_memory_api.py)."""
    return {"wall_time": 1.0, "level": "ksm", "reasons": ["KSM on: <overcommitted>"], "errors": [],
            "host": {"physical": 4096 * MIB, "committed": 1024 * MIB, "guests_resident": 600 * MIB,
                     "guests_used": 500 * MIB, "consolidation_ratio": 2.048, "savings_ksm": 100 * MIB,
                     "savings_balloon": 64 * MIB, "savings_swap": 0, "available": 3000 * MIB},
            "guests": [{"instance_id": server_id, "configured": 512 * MIB, "resident": resident_mib * MIB,
                        "ballooned": 32 * MIB, "shared": 50 * MIB, "swapped": 0, "working_set": 200 * MIB,
                        "pressured": False}]}


def seed(services: Services, host: str, server_id: str, residents: list[int]) -> None:
    """One sample per resident size, 10 s apart, dated an hour ahead (after the agent's own reports)."""
    start = utcnow() + timedelta(hours=1)
    with services.db.begin() as s:
        for i, resident in enumerate(residents):
            s.add(t.MemorySample(host=host, at=start + timedelta(seconds=10 * i), data=ledger(server_id, resident)))


def test_the_memory_page_charts_each_host_and_server_over_time(dash: dict[str, Any], admin: Browser) -> None:
    a = dash["host"].driver.hostname
    name = "<b>db</b>"
    sid = dash["alice"].post("/servers", body(dash, name=name)).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    seed(dash["api"].services, a, sid, [200, 250, 300])
    page = admin.http.get(f"{D}/admin/memory")
    assert page.status_code == 200, page.text
    assert_secure_headers(page)
    text = page.text
    assert "<b>db</b>" not in text and "server &lt;b&gt;db&lt;/b&gt;" in text  # the chart's title, escaped
    assert "KSM on: &lt;overcommitted&gt;" in text and "consolidation 2.05x" in text
    charts = re.findall(r'<svg class="chart".*?</svg>', text, re.S)
    titles = [re.search(r"<title>(.*?)</title>", c).group(1) for c in charts]  # type: ignore[union-attr]
    assert titles == [f"host {a}", "server &lt;b&gt;db&lt;/b&gt;"], titles
    host_chart, server_chart = charts
    for label in ("resident", "shared by KSM", "ballooned", "swapped"):
        assert f">{label}</text>" in host_chart and f">{label}</text>" in server_chart
    assert ">physical</text>" in host_chart and ">configured</text>" in server_chart
    # the server's resident line: at least the three seeded samples (the agent's own reports come before)
    resident = re.search(r'<path class="line s1" d="([^"]+)"', server_chart)
    assert resident and resident.group(1).count("L") >= 2, server_chart
    row = re.search(rf'<tr id="memory-server-{sid}">(.*?)</tr>', text, re.S)
    assert row and "300 MiB" in row.group(1) and "50 MiB" in row.group(1)  # the newest sample
    assert 'hx-trigger="every 5s"' in text
    polled = admin.http.get(f"{D}/admin/memory?part=ledger", headers={"HX-Request": "true"}).text
    assert re.findall(r'<svg class="chart".*?</svg>', polled, re.S) == charts  # the same ledger, no balancer
    assert "Mode <strong>" in text and "Mode <strong>" not in polled


def test_the_memory_page_shows_the_templates_line_and_marks_clones(dash: dict[str, Any], admin: Browser) -> None:
    a = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="web")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    entry = ledger(sid, 200)
    entry["host"] |= {"templates": [{"key": "3f2a", "resident": 128 * MIB, "clones": 1}],
                      "templates_resident": 128 * MIB}
    entry["guests"][0] |= {"template": "3f2a", "template_shared": 90 * MIB}
    with dash["api"].services.db.begin() as s:
        s.add(t.MemorySample(host=a, at=utcnow() + timedelta(hours=1), data=entry))
    text = admin.http.get(f"{D}/admin/memory").text
    line = re.search(rf'<p id="memory-templates-{a}">(.*?)</p>', text, re.S)
    assert line and "<code>3f2a</code> 128 MiB, 1 clone." in line.group(1), text
    row = re.search(rf'<tr id="memory-server-{sid}">(.*?)</tr>', text, re.S)
    assert row and ">clone</span>" in row.group(1) and "90 MiB of its resident memory" in row.group(1)
    charts = re.findall(r'<svg class="chart".*?</svg>', text, re.S)
    assert ">templates (page cache, once)</text>" in charts[0]
    assert ">from its template (page cache)</text>" in charts[1]


def test_the_balancer_plan_with_its_reasons_and_applying_it(dash: dict[str, Any], two: dict[str, Any],
                                                            admin: Browser) -> None:
    services: Services = dash["api"].services
    a, sid = dash["host"].driver.hostname, two["server"]
    report(services, a, 0.90, {sid: 1 << 30})
    report(services, B, 0.10, {})
    page = admin.http.get(f"{D}/admin/memory").text
    assert "Mode <strong>advise</strong>" in page
    moves = re.search(r'<table id="balancer-moves">(.*?)</table>', page, re.S)
    assert moves and "vm" in moves.group(1) and "advisory" in moves.group(1) and B in moves.group(1), page
    r = admin.http.post(f"{D}/admin/memory/apply", data={"csrf_token": admin.csrf(f"{D}/admin/memory")})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/memory"
    assert "no move to apply (mode advise" in admin.http.get(f"{D}/admin/memory").text
    assert migrations(two) == []
    services.balancer.mode = "auto"
    r = admin.http.post(f"{D}/admin/memory/apply", data={"csrf_token": admin.csrf(f"{D}/admin/memory")})
    assert r.status_code == 303
    page = admin.http.get(f"{D}/admin/memory").text
    assert "Queued 1 live migration(s)." in page
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B
    passes = re.search(r'<table id="balancer-passes">(.*?)</table>', page, re.S)
    assert passes and "vm: queued" in passes.group(1), page


# -- flavors, quotas, projects, users and roles ---------------------------------------------------

def test_creating_and_deleting_a_flavor(dash: dict[str, Any], admin: Browser) -> None:
    page = admin.http.get(f"{D}/admin/flavors").text
    assert "m1.nano" in page and 'id="create-flavor"' in page
    token = admin.csrf(f"{D}/admin/flavors")
    r = admin.http.post(f"{D}/admin/flavors", data={"csrf_token": token, "name": "<i>big</i>", "vcpus": "4",
                                                    "ram": "8192", "disk": "40"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/flavors"
    flavors = {f["name"]: f for f in dash["admin"].get("/flavors/detail", is_public="None").json()["flavors"]}
    made = flavors["<i>big</i>"]
    assert (made["vcpus"], made["ram"], made["disk"], made["os-flavor-access:is_public"]) == (4, 8192, 40, False)
    page = admin.http.get(f"{D}/admin/flavors").text
    assert "&lt;i&gt;big&lt;/i&gt;" in page and "<i>big</i>" not in page and "Created the flavor" in page
    r = admin.http.post(f"{D}/admin/flavors", data={"csrf_token": token, "name": "x", "vcpus": "many",
                                                    "ram": "1", "disk": "1"})
    assert "vCPUs must be a whole number." in admin.http.get(f"{D}/admin/flavors").text
    r = admin.http.post(f"{D}/admin/flavors/{made['id']}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    assert "<i>big</i>" not in {f["name"] for f in dash["admin"].get("/flavors/detail", is_public="None")
                                .json()["flavors"]}


def test_creating_a_project_and_a_user_with_a_role_who_can_then_sign_in(dash: dict[str, Any],
                                                                        admin: Browser) -> None:
    token = admin.csrf(f"{D}/admin/projects")
    r = admin.http.post(f"{D}/admin/projects", data={"csrf_token": token, "name": "gamma", "description": "third"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/projects"
    page = admin.http.get(f"{D}/admin/projects").text
    gamma = re.search(r'<option value="([0-9a-f]+)">gamma</option>', page)
    member = re.search(r'<option value="([0-9a-f]+)"[^>]*>member</option>', page)
    reader = re.search(r'<option value="([0-9a-f]+)"[^>]*>reader</option>', page)
    assert gamma and member and reader, page
    r = admin.http.post(f"{D}/admin/users", data={"csrf_token": token, "name": "gina", "password": "gina-pw",
                                                  "email": "", "project_id": gamma.group(1),
                                                  "role_id": member.group(1)})
    assert r.status_code == 303
    page = admin.http.get(f"{D}/admin/projects").text
    assert "Created the user gina with a role on the chosen project." in page
    row = re.search(rf'<tr id="project-{gamma.group(1)}">(.*?)</tr>', page, re.S)
    assert row and "gina (member)" in row.group(1) and "third" in row.group(1)
    assert "gina-pw" not in page
    gina = Browser(dash["app"]).signed_in("gina")  # her password works and her project is gamma
    assert "gamma" in gina.http.get(f"{D}/project/instances").text
    # and a role on another project, granted afterwards
    user = re.search(r'<option value="([0-9a-f]+)">gina</option>', page)
    alpha = re.search(r'<option value="([0-9a-f]+)">alpha</option>', page)
    assert user and alpha
    r = admin.http.post(f"{D}/admin/grants", data={"csrf_token": token, "user_id": user.group(1),
                                                   "role_id": reader.group(1), "project_id": alpha.group(1)})
    assert r.status_code == 303
    row = re.search(rf'<tr id="project-{alpha.group(1)}">(.*?)</tr>', admin.http.get(f"{D}/admin/projects").text,
                    re.S)
    assert row and "gina (reader)" in row.group(1)
    gina.http.close()


def test_editing_a_projects_quotas(dash: dict[str, Any], admin: Browser) -> None:
    project = dash["a"]["project_id"]
    page = admin.http.get(f"{D}/admin/projects/{project}/quotas")
    assert page.status_code == 200 and "of the project alpha" in page.text
    assert 'name="instances"' in page.text and 'name="floating_ips"' not in page.text  # Neutron's since 2.36
    token = admin.csrf(f"{D}/admin/projects/{project}/quotas")
    r = admin.http.post(f"{D}/admin/projects/{project}/quotas", data={"csrf_token": token, "instances": "3",
                                                                      "cores": "-1"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/projects/{project}/quotas"
    got = dash["admin"].get(f"/os-quota-sets/{project}").json()["quota_set"]
    assert (got["instances"], got["cores"]) == (3, -1)
    page = admin.http.get(f"{D}/admin/projects/{project}/quotas").text
    assert "Changed cores to -1, instances to 3." in page and 'id="quota-instances" name="instances" type="number" ' \
        'min="-1" value="3"' in page
    r = admin.http.post(f"{D}/admin/projects/{project}/quotas", data={"csrf_token": token, "instances": "-2"})
    assert "Instances must be from -1 to" in admin.http.get(f"{D}/admin/projects/{project}/quotas").text
    assert dash["admin"].get(f"/os-quota-sets/{project}").json()["quota_set"]["instances"] == 3


# -- the same pages and forms as a member tries them ----------------------------------------------

ADMIN_PAGES = ["/admin/hosts", "/admin/hosts/{host}", "/admin/migrations", "/admin/operations", "/admin/memory",
               "/admin/flavors", "/admin/projects", "/admin/projects/{project}/quotas"]
ADMIN_FORMS = ["/admin/hosts/{host}/disable", "/admin/hosts/{host}/enable", "/admin/hosts/{host}/drain",
               "/admin/servers/{sid}/live-migrate", "/admin/servers/{sid}/evacuate", "/admin/memory/apply",
               "/admin/flavors", "/admin/flavors/42/delete", "/admin/projects", "/admin/projects/{project}/quotas",
               "/admin/users", "/admin/grants"]


def test_a_member_sees_no_admin_entry_and_every_admin_page_and_form_refuses_her(dash: dict[str, Any]) -> None:
    name = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    alice = dash["browser"]("alice")
    token = alice.csrf()  # her own, valid CSRF token: the refusal is for who she is
    assert "/admin/" not in alice.http.get(f"{D}/project/instances").text
    project = dash["a"]["project_id"]
    flavors_before = dash["admin"].get("/flavors/detail", is_public="None").json()["flavors"]
    projects_before = dash["api"].http.get("/identity/v3/projects", headers=dash["api"].headers(
        dash["api"].admin())).json()["projects"]
    quotas_before = dash["admin"].get(f"/os-quota-sets/{project}").json()["quota_set"]
    for path in ADMIN_PAGES:
        r = alice.http.get(D + path.format(host=name, project=project))
        assert r.status_code == 403 and "This page is for administrators" in r.text, path
        assert name not in r.text.replace(f"/admin/hosts/{name}", "")  # nothing about the host leaks
    # every field any admin form reads, filled in as an attacker would
    fields = {"csrf_token": token, "reason": "mine", "host": name, "name": "evil", "vcpus": "64", "ram": "1",
              "disk": "1", "public": "on", "description": "x", "password": "evil-pw", "project_id": project,
              "user_id": dash["a"]["user_id"], "role_id": "admin", "instances": "1000"}
    for path in ADMIN_FORMS:
        r = alice.http.post(D + path.format(host=name, sid=sid, project=project), data=fields)
        assert r.status_code == 403, path
    [svc] = services(dash)
    assert (svc["status"], svc["disabled_reason"]) == ("enabled", None)
    server = wait_for(dash["admin"], sid, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == name
    assert dash["admin"].get("/os-migrations").json()["migrations"] == []
    assert dash["admin"].get("/flavors/detail", is_public="None").json()["flavors"] == flavors_before
    assert dash["api"].http.get("/identity/v3/projects", headers=dash["api"].headers(
        dash["api"].admin())).json()["projects"] == projects_before
    assert dash["api"].http.get("/identity/v3/users", params={"name": "evil"}, headers=dash["api"].headers(
        dash["api"].admin())).json()["users"] == []
    assert dash["admin"].get(f"/os-quota-sets/{project}").json()["quota_set"] == quotas_before
