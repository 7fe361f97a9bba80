"""Import rules that keep the layers honest (nova's hacking checks, as a test).

- leaves (errors, types, config) import nothing of ours but each other as documented;
- only services (and wiring, migrations, the agent link) import ``yunstack.db``;
- drivers import no service, no db, no api;
- the protocol (wire models) imports only leaves; the agent reaches no db, service or compute.states;
- cli and dashboard reach the cloud only through ``yunstack.client``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "yunstack"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith("yunstack")}


def modules(*parts: str) -> list[Path]:
    return sorted((SRC.joinpath(*parts)).rglob("*.py")) if SRC.joinpath(*parts).is_dir() else [
        SRC.joinpath(*parts[:-1], parts[-1] + ".py")]


@pytest.mark.parametrize("leaf,allowed", [("errors", set()), ("types", set()),
                                          ("config", {"yunstack.errors"}), ("cgroups", {"yunstack.errors"}),
                                          ("tool", {"yunstack.errors"})])
def test_leaves_import_nothing_of_ours(leaf: str, allowed: set[str]) -> None:
    assert imports(SRC / f"{leaf}.py") <= allowed


def test_only_services_touch_the_database() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("db/", "api/", "cli/", "client/", "dashboard/", "agent/", "memory/",
                           "network/dataplane/")) or "/drivers/" in rel or rel.startswith("compute/qemu/"):
            if any(m.startswith("yunstack.db") for m in imports(path)) and not rel.startswith("db/"):
                bad.append(rel)
    assert bad == []


def test_drivers_import_no_service_db_or_api() -> None:
    bad = []
    dataplane = modules("network", "dataplane") if (SRC / "network" / "dataplane").is_dir() else []
    for path in [*modules("compute", "qemu"), SRC / "compute" / "fake.py", SRC / "compute" / "driver.py",
                 *dataplane]:
        for m in imports(path):
            if m.startswith(("yunstack.db", "yunstack.api", "yunstack.identity")) or m.endswith(".service"):
                bad.append(f"{path.relative_to(SRC)} imports {m}")
    assert bad == []


LEAVES = {"yunstack.errors", "yunstack.types", "yunstack.config", "yunstack.cgroups", "yunstack.tool"}


def test_drivers_import_only_the_leaves_and_their_own_seam() -> None:
    """What docs/explanation/architecture.md claims: a driver needs nothing of the cloud above it."""
    bad = []
    for path in [*modules("compute", "qemu"), SRC / "compute" / "fake.py", SRC / "compute" / "driver.py"]:
        for m in imports(path):
            if m not in LEAVES and m != "yunstack.compute.driver" and not m.startswith("yunstack.compute.qemu"):
                bad.append(f"{path.relative_to(SRC)} imports {m}")
    assert bad == []


def test_cli_and_dashboard_use_only_the_client() -> None:
    bad = []
    for sub in ("cli", "dashboard"):
        for path in modules(sub) if (SRC / sub).is_dir() else []:
            for m in imports(path):
                if m.startswith(("yunstack.api", "yunstack.db", "yunstack.wiring")) or m.endswith(".service"):
                    bad.append(f"{path.relative_to(SRC)} imports {m}")
    # `yun up` is the server itself: it may assemble the services (cli/main.py imports yunstack.server lazily).
    assert bad == []


def test_the_dashboard_reaches_the_cloud_only_through_the_client() -> None:
    """Stricter than the CLI (which also starts the server): the dashboard imports only the client."""
    bad = [f"{p.relative_to(SRC)} imports {m}" for p in modules("dashboard") for m in imports(p)
           if not m.startswith(("yunstack.dashboard", "yunstack.client"))]
    assert bad == []
    assert modules("dashboard"), "the dashboard package moved: update this test"


def _module_path(module: str) -> Path | None:
    base = SRC.joinpath(*module.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _closure(root: str) -> set[str]:
    """Every module of ours that importing ``root`` can load (lazy and TYPE_CHECKING imports included)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        module = todo.pop()
        path = _module_path(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))  # parent packages run first
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo.append(node.module)
                todo.extend(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in seen if m.startswith("yunstack")}


def test_the_protocol_imports_only_leaves() -> None:
    # The wire models are shared by the agent, the control plane and the transport: neither side's code.
    bad = [f"{p.relative_to(SRC)} imports {m}" for p in modules("protocol") for m in imports(p)
           if not m.startswith(("yunstack.protocol", "yunstack.errors", "yunstack.types"))]
    assert bad == []


def test_the_agent_reaches_no_database_service_or_state_machine() -> None:
    # The host reports what it saw; the control plane decides vm_state (compute.operations), so the
    # agent (and everything it loads) never sees compute.states, the db, a service or the agent link's
    # control-plane side.
    loaded = _closure("yunstack.agent.agent")
    bad = sorted(m for m in loaded if m.startswith(("yunstack.db", "yunstack.api", "yunstack.identity",
                                                     "yunstack.compute.states", "yunstack.compute.operations",
                                                     "yunstack.compute.agentlink", "yunstack.wiring"))
                 or m.endswith(".service"))
    assert bad == []
    assert "yunstack.protocol" in loaded


def test_the_agent_reaches_the_control_plane_only_through_its_link() -> None:
    """Agents never open the database: no db, api, service or composition root in ``yunstack.agent``."""
    bad = []
    for path in modules("agent"):
        for m in imports(path):
            if m.startswith(("yunstack.db", "yunstack.api", "yunstack.wiring", "yunstack.server")) or (
                    m.endswith((".service", "agentlink", "hostauth", "hostcalls"))):
                bad.append(f"{path.relative_to(SRC)} imports {m}")
    assert bad == []
