"""Memory templates on a real cloud: servers of an image marked ``yunstack:memory_template`` start
from a template the host made after the first one booted, and each takes its own identity on
resume: its hostname, its MAC and its DHCP lease, all as the API shows them
(docs/explanation/memory-templates.md).  Addresses: 10.96.0.0/24, this test's own network.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud import BIN, RunningCloud, serving_cloud

pytestmark = pytest.mark.integration

DEMO = "yunstack-demo"
READY = re.compile(r"YUNSTACK-READY hostname=(\S+) ip=(\S+) instance-id=(\S+)")
MAC = re.compile(r"MAC=([0-9a-f:]{17})")
BOOT = 180.0  # a tiny guest under TCG on a loaded host
TEMPLATE_MADE = 300.0  # the template guest's own boot, then its save
USER_DATA = '#!/bin/sh\necho "MAC=$(cat /sys/class/net/eth0/address)"\n'


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("templates")) as running:
        yield running


def _console(cloud: RunningCloud, server: str, pattern: re.Pattern[str], timeout: float = BOOT) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = cloud.osc("console", "log", "show", server, cloud=DEMO).stdout
        if pattern.search(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"{pattern.pattern!r} not on {server}'s console:\n{text[-2000:]}")


def _template(cloud: RunningCloud) -> Path:
    deadline = time.monotonic() + TEMPLATE_MADE
    root = cloud.state_dir / "instances" / ".templates"
    while time.monotonic() < deadline:
        made = [p for p in root.glob("*/template.json")] if root.is_dir() else []
        if made:
            return made[0].parent
        time.sleep(0.5)
    raise AssertionError(f"no memory template under {root} within {TEMPLATE_MADE:.0f}s")


def _qemu(server_id: str) -> tuple[Path, str]:
    """The /proc directory and the command line of the server's QEMU."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"guest={server_id}," in args:
            return proc, args
    raise AssertionError(f"no QEMU for {server_id}")


def _qemu_args(server_id: str) -> str:
    return _qemu(server_id)[1]


def _open_files(server_id: str) -> set[str]:
    proc = _qemu(server_id)[0]
    found = set()
    for fd in (proc / "fd").iterdir():
        try:
            found.add(str(fd.readlink()))
        except OSError:
            continue
    return found


def test_servers_of_a_template_image_start_from_it_each_with_its_own_hostname_mac_and_lease(
        cloud: RunningCloud, tmp_path: Path) -> None:
    tiny = cloud.state_dir / "tiny-image" / "tiny.qcow2"
    cloud.osc("image", "create", "--file", str(tiny), "--disk-format", "qcow2",
              "--property", "yunstack:memory_template=true", "tiny-tpl", cloud=DEMO)
    cloud.osc("network", "create", "tn", cloud=DEMO)
    cloud.osc("subnet", "create", "--network", "tn", "--subnet-range", "10.96.0.0/24", "ts", cloud=DEMO)
    (tmp_path / "ud.sh").write_text(USER_DATA)

    def create(name: str) -> tuple[str, float]:
        began = time.monotonic()
        made = cloud.osc_json("server", "create", "--image", "tiny-tpl", "--flavor", "m1.nano", "--network", "tn",
                              "--user-data", str(tmp_path / "ud.sh"), "--wait", name, cloud=DEMO)
        _console(cloud, name, re.compile(rf"YUNSTACK-READY hostname={name} "))
        return str(made["id"]), time.monotonic() - began

    first, cold = create("first")
    template = _template(cloud)  # made beside the first server, which booted
    assert f".templates/{template.name}/" not in _qemu_args(first)

    seen: dict[str, tuple[str, str]] = {}
    for name in ("clone-a", "clone-b", "clone-c"):
        server_id, took = create(name)
        text = _console(cloud, name, re.compile(rf"YUNSTACK-READY hostname={name} "))
        assert "YUNSTACK-RESUME" in text and "Linux version" not in text, text[-1500:]  # resumed, not booted
        # Its identity came over its identity port, and its config drive (for a later boot) was
        # plugged in once it was ready, before the server was ACTIVE.
        assert f"hostname={name} source=identity-port" in text, text[-1500:]
        assert any(f.endswith(f"/{server_id}/config.iso") for f in _open_files(server_id))
        assert f"/.templates/{template.name}/ram" in _qemu_args(server_id)
        ready = READY.search(text.split("YUNSTACK-RESUME", 1)[1])
        assert ready is not None and ready.group(3) == server_id
        shown = cloud.osc_json("server", "show", name, cloud=DEMO)
        assert [ready.group(2)] == re.findall(r"10\.96\.0\.\d+", json.dumps(shown["addresses"])), shown["addresses"]
        (port,) = cloud.osc_json("port", "list", "--server", server_id, cloud=DEMO)
        macs = MAC.findall(text)
        assert macs and macs[-1] == port["MAC Address"], (macs, port)
        seen[name] = (ready.group(2), macs[-1])
        print(f"{name}: create to READY {took:.1f} s (first server, booted: {cold:.1f} s)")
    assert len({ip for ip, _ in seen.values()}) == len({mac for _, mac in seen.values()}) == 3

    # The ledger counts the template's page cache once for the host, and marks the clones.
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run([str(BIN / "yun"), "memory", "--format", "json", "--state-dir", str(cloud.state_dir)],
                              capture_output=True, text=True, env=cloud.env(), check=True)
        (entry,) = json.loads(done.stdout)
        lines = {t["key"]: t for t in entry["balance"].get("templates") or []}
        clones = {s["name"] for s in entry["servers"] if s.get("template") == template.name}
        if template.name in lines and clones == set(seen):
            break
        assert time.monotonic() < deadline, entry
        time.sleep(1)
    assert lines[template.name]["clones"] == 3 and lines[template.name]["resident"] > 0

    # Suspended and resumed, a clone is restored into RAM of its own and runs on.
    cloud.osc("server", "suspend", "clone-a", cloud=DEMO)
    deadline = time.monotonic() + 120
    while cloud.osc_json("server", "show", "clone-a", cloud=DEMO)["status"] != "SUSPENDED":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    cloud.osc("server", "resume", "clone-a", cloud=DEMO)
    while cloud.osc_json("server", "show", "clone-a", cloud=DEMO)["status"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "/.templates/" not in _qemu_args(cloud.osc_json("server", "show", "clone-a", cloud=DEMO)["id"])

    for name in ("first", "clone-a", "clone-b", "clone-c"):
        cloud.osc("server", "delete", "--wait", name, cloud=DEMO)
    cloud.osc("subnet", "delete", "ts", cloud=DEMO)
    cloud.osc("network", "delete", "tn", cloud=DEMO)
