"""The tiny guest image boots from its own disk under QEMU, reads a config drive, and powers off on ACPI.

These boot real QEMU (TCG, no KVM needed) and fail, rather than skip, when QEMU is missing.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from yunstack.image.tiny import build_tiny_image

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 30.0
POWERDOWN_TIMEOUT = 15.0
INSTANCE_ID = "0b6f6a4e-3c1d-4a8e-9a57-6c1f2d3e4f50"


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_image(tmp_path_factory.mktemp("tiny-image"))


def _config_drive(directory: Path, user_data: str) -> Path:
    latest = directory / "drive" / "openstack" / "latest"
    latest.mkdir(parents=True)
    meta = {
        "uuid": INSTANCE_ID,
        "name": "tinytest",
        "hostname": "tinytest",
        "public_keys": {"test": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@yunstack\n"},
        "meta": {"purpose": "integration"},
    }
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "user_data").write_text(user_data)
    iso = directory / "cfg.iso"
    subprocess.run(
        ["genisoimage", "-o", str(iso), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
         "-publisher", "yunstack", "-quiet", "-J", "-r", "-V", "config-2", str(directory / "drive")],
        check=True,
    )  # fmt: skip
    return iso


class Guest:
    """One QEMU process booting an overlay of the tiny image, with its serial log and QMP socket."""

    def __init__(self, image: Path, directory: Path, config_drive: Path) -> None:
        self.log = directory / "console.log"
        self.qmp_socket = directory / "qmp.sock"
        overlay = directory / "overlay.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)],
            check=True,
        )
        self.argv = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,tb-size=32", "-m", "192", "-smp", "1",
            "-nographic", "-serial", f"file:{self.log}", "-display", "none", "-nodefaults",
            "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-drive", f"file={config_drive},if=virtio,format=raw,readonly=on",
            "-device", "virtio-balloon-pci,free-page-reporting=on",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
        ]  # fmt: skip
        self.stderr = directory / "qemu.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.started = time.monotonic()

    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def wait_for_markers(self, patterns: Sequence[str], timeout: float) -> list[re.Match[str]]:
        """Wait until every pattern has matched a console line, in the given order."""
        assert self.process is not None
        deadline = self.started + timeout
        while True:
            matches = _match_in_order(self.console(), patterns)
            if len(matches) == len(patterns):
                return matches
            if self.process.poll() is not None:
                stderr = self.stderr.read_text()
                pytest.fail(f"QEMU exited with {self.process.returncode}: {stderr}\n{self.console()}")
            if time.monotonic() > deadline:
                missing = patterns[len(matches)]
                pytest.fail(f"no console line matching {missing!r} within {timeout} s:\n{self.console()}")
            time.sleep(0.05)

    def powerdown(self) -> None:
        asyncio.run(self._qmp_powerdown())

    async def _qmp_powerdown(self) -> None:
        qmp = QMPClient("tiny-image-test")
        await qmp.connect(str(self.qmp_socket))
        try:
            await qmp.execute("system_powerdown")
        finally:
            await qmp.disconnect()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _match_in_order(text: str, patterns: Sequence[str]) -> list[re.Match[str]]:
    matches: list[re.Match[str]] = []
    lines = iter(text.splitlines())
    for pattern in patterns:
        for line in lines:
            match = re.search(pattern, line)
            if match:
                matches.append(match)
                break
        else:
            break
    return matches


GuestFactory = Callable[[str], Guest]


@pytest.fixture
def boot_guest(tiny_image: Path, tmp_path: Path) -> Iterator[GuestFactory]:
    """Boots guests with a config drive holding the given user_data; kills them all afterwards."""
    guests: list[Guest] = []

    def make(user_data: str) -> Guest:
        guest = Guest(tiny_image, tmp_path, _config_drive(tmp_path, user_data))
        guests.append(guest)
        guest.start()
        return guest

    try:
        yield make
    finally:
        for guest in guests:
            guest.kill()


def test_the_tiny_image_boots_reads_the_config_drive_and_powers_off_on_acpi(boot_guest: GuestFactory) -> None:
    guest = boot_guest("#!/bin/sh\necho hello-from-userdata\n")
    guest.wait_for_markers(
        [
            r"^YUNSTACK-BOOT kernel=\S+$",
            rf"^YUNSTACK-METADATA instance-id={INSTANCE_ID} hostname=tinytest source=config-drive$",
            r"^YUNSTACK-USERDATA-BEGIN$",
            r"^hello-from-userdata$",
            r"^YUNSTACK-USERDATA-END rc=0$",
            rf"^YUNSTACK-READY hostname=tinytest ip=none instance-id={INSTANCE_ID} ip6=none$",
        ],
        BOOT_TIMEOUT,
    )
    assert guest.process is not None
    guest.powerdown()
    try:
        guest.process.wait(timeout=POWERDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no power-off within {POWERDOWN_TIMEOUT} s of system_powerdown:\n{guest.console()}")
    assert guest.process.returncode == 0
    # busybox init's own message: the guest shut down through init, not by crashing.
    assert "Requesting system poweroff" in guest.console()


def test_memload_runs_in_the_guest_and_reports_latency(boot_guest: GuestFactory) -> None:
    guest = boot_guest("#!/bin/sh\nmemload --mib 32 --pattern same --seconds 2\n")
    done, _, _ = guest.wait_for_markers(
        [
            r"^MEMLOAD-DONE mib=32 touched=(\d+) rate=\S+ elapsed=(\S+)"
            r" p50_us=(\S+) p95_us=(\S+) fill_s=\S+$",
            r"^YUNSTACK-USERDATA-END rc=0$",
            r"^YUNSTACK-READY hostname=tinytest ",
        ],
        BOOT_TIMEOUT + 5,
    )
    touched, elapsed, p50, p95 = (float(group) for group in done.groups())
    assert touched >= 32
    assert 1.9 <= elapsed <= 5
    assert 0 < p50 <= p95
