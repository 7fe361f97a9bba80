"""Import rules that keep the layers honest (nova's hacking checks, as a test).

- leaves (errors, types, config) import nothing of ours but each other as documented;
- only services (and wiring, migrations, the agent link) import ``yunstack.db``;
- drivers import no service, no db, no api;
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
                                          ("config", {"yunstack.errors"}), ("cgroups", {"yunstack.errors"})])
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


LEAVES = {"yunstack.errors", "yunstack.types", "yunstack.config", "yunstack.cgroups"}


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
