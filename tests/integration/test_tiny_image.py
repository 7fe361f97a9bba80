"""The tiny guest image boots from its own disk under QEMU, reads a config drive, and powers off on ACPI;
a config drive hot-plugged later gives it a new identity (what a guest started from a memory template needs).

These boot real QEMU (TCG, no KVM needed) and fail, rather than skip, when QEMU is missing.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from yunstack.compute.driver import ConfigDrive, Ipv4Config
from yunstack.compute.qemu import identity, template
from yunstack.compute.qemu.configdrive import build_iso, write_tree
from yunstack.compute.qemu.qmp import open_session, wait_for_qmp
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

    def __init__(self, image: Path, directory: Path, config_drive: Path | None, extra: Sequence[str] = ()) -> None:
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
            *(["-drive", f"file={config_drive},if=virtio,format=raw,readonly=on"] if config_drive else []),
            "-device", "virtio-balloon-pci,free-page-reporting=on",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            *extra,
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

    def wait_for_markers(self, patterns: Sequence[str], timeout: float, after: int = 0) -> list[re.Match[str]]:
        """Wait until every pattern has matched a console line, in the given order: from the start of
        the console within ``timeout`` of the start, or from its ``after``-th character on within
        ``timeout`` of now."""
        assert self.process is not None
        deadline = (time.monotonic() if after else self.started) + timeout
        while True:
            matches = _match_in_order(self.console()[after:], patterns)
            if len(matches) == len(patterns):
                return matches
            if self.process.poll() is not None:
                stderr = self.stderr.read_text()
                pytest.fail(f"QEMU exited with {self.process.returncode}: {stderr}\n{self.console()}")
            if time.monotonic() > deadline:
                missing = patterns[len(matches)]
                pytest.fail(f"no console line matching {missing!r} within {timeout} s:\n{self.console()}")
            time.sleep(0.05)

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 10.0) -> None:
        """Until the console has printed nothing for ``quiet`` s, as the host waits before it saves a
        template guest (templatestore.wait_quiet): its console shell has drawn its prompt by then."""
        deadline, size, since = time.monotonic() + timeout, len(self.console()), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.05)
            if (now := len(self.console())) != size:
                size, since = now, time.monotonic()

    def powerdown(self) -> None:
        self.qmp(("system_powerdown", None))

    def qmp(self, *commands: tuple[str, dict[str, Any] | None]) -> None:
        asyncio.run(self._qmp(commands))

    async def _qmp(self, commands: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
        qmp = QMPClient("tiny-image-test")
        await qmp.connect(str(self.qmp_socket))
        try:
            for command, arguments in commands:
                await qmp.execute(command, arguments)
        finally:
            await qmp.disconnect()

    def plug_disk(self, path: Path, port: int, name: str) -> None:
        """Hot-plug ``path`` (raw, read-only) as a virtio-blk disk into root port ``hotplug<port>``."""
        self.qmp(
            ("blockdev-add", {"driver": "raw", "node-name": name, "read-only": True,
                              "file": {"driver": "file", "filename": str(path), "read-only": True}}),
            ("device_add", {"driver": "virtio-blk-pci", "drive": name, "id": f"{name}-dev", "bus": f"hotplug{port}"}),
        )  # fmt: skip

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


def _guests(tiny_image: Path, tmp_path: Path, extra: Sequence[str] = ()) -> Iterator[GuestFactory]:
    """Boots guests with a config drive holding the given user_data (and ``extra`` QEMU arguments);
    kills them all afterwards."""
    guests: list[Guest] = []

    def make(user_data: str) -> Guest:
        guest = Guest(tiny_image, tmp_path, _config_drive(tmp_path, user_data), extra)
        guests.append(guest)
        guest.start()
        return guest

    try:
        yield make
    finally:
        for guest in guests:
            guest.kill()


@pytest.fixture
def boot_guest(tiny_image: Path, tmp_path: Path) -> Iterator[GuestFactory]:
    """Boots guests with a config drive holding the given user_data; kills them all afterwards."""
    yield from _guests(tiny_image, tmp_path)


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


# As the driver's q35 command line has them (cmdline.py): hot-plugs need empty PCIe root ports.
ROOT_PORTS = [arg for index in range(4)
              for arg in ("-device", f"pcie-root-port,id=hotplug{index},chassis={index + 1},bus=pcie.0")]
CLONE_ID = "5d0c3f7e-9b1a-4c2d-8e3f-a1b2c3d4e5f6"
CLONE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICloneKeyForTests clone@yunstack"
RESUME_TIMEOUT = 30.0


def _iso(directory: Path, drive: ConfigDrive) -> Path:
    iso = directory / f"{directory.name}.iso"
    directory.mkdir()
    asyncio.run(build_iso(drive, iso))
    return iso


def _clone_drive(directory: Path, instance_id: str, hostname: str, user_data: str) -> Path:
    # The control plane's network_data lists no links: the guest finds its NIC on the PCI bus.
    return _iso(directory, ConfigDrive(
        meta_data={"uuid": instance_id, "name": hostname, "hostname": hostname, "public_keys": {"clone": CLONE_KEY},
                   "random_seed": "c2VlZA==" * 86},
        user_data=user_data.encode(), network_data={"links": [], "networks": [], "services": []}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _host_key(port: int, timeout: float = 60.0) -> str:
    """The ed25519 host key the ssh server forwarded to ``port`` serves ("ssh-ed25519 BASE64")."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "ssh-ed25519":
                return f"{fields[1]} {fields[2]}"
        time.sleep(1)
    raise AssertionError(f"no ed25519 host key on port {port} within {timeout}s: {out!r}")


def test_a_config_drive_hot_plugged_into_a_guest_without_one_gives_it_the_drives_identity(
        tiny_image: Path, tmp_path: Path) -> None:
    # A template guest: no config drive and no NIC, and a clock far behind, like a clone's (the
    # template's clock stops at its save).
    guest = Guest(tiny_image, tmp_path, None, [*ROOT_PORTS, "-rtc", "base=2020-01-01T00:00:00"])
    guest.start()
    try:
        first = guest.wait_for_markers(
            [r"^YUNSTACK-SSH-HOSTKEY (ssh-ed25519 \S+)$",
             r"^YUNSTACK-READY hostname=yunstack ip=none instance-id=none ip6=none$"],
            BOOT_TIMEOUT)
        booted = len(guest.console())
        user_data = "#!/bin/sh\necho clone-says-hi\necho \"guest-clock $(date +%s)\"\ncat /root/.ssh/authorized_keys\n"
        built = time.time()
        iso = _clone_drive(tmp_path / "clone", CLONE_ID, "clone-1", user_data)
        # What the driver does after starting a clone: every NIC first, then the config drive.
        ssh_port = _free_port()
        guest.qmp(("netdev_add", {"type": "user", "id": "net0", "hostfwd": [{"str": f"tcp:127.0.0.1:{ssh_port}-:22"}]}),
                  ("device_add", {"driver": "virtio-net-pci", "netdev": "net0", "id": "nic0",
                                  "mac": "52:54:00:12:34:56", "bus": "hotplug0"}))
        guest.plug_disk(iso, 1, "config")
        resumed = guest.wait_for_markers(
            [rf"^YUNSTACK-RESUME instance-id={CLONE_ID} was=none$",
             rf"^YUNSTACK-METADATA instance-id={CLONE_ID} hostname=clone-1 source=config-drive$",
             r"^YUNSTACK-SSH-HOSTKEY (ssh-ed25519 \S+)$",
             r"^YUNSTACK-USERDATA-BEGIN$",
             r"^clone-says-hi$",
             r"^guest-clock (\d+)$",
             rf"^{CLONE_KEY}$",
             r"^YUNSTACK-USERDATA-END rc=0$",
             rf"^YUNSTACK-READY hostname=clone-1 ip=10\.0\.2\.15 instance-id={CLONE_ID} ip6=\S+$"],
            RESUME_TIMEOUT, after=booted)
        host_clock = time.time()
        # The dropbear on port 22 is the new one, serving the new key (the template's was stopped).
        served = _host_key(ssh_port)
        # A clone keeps the identity it took: another drive later is left alone.
        guest.plug_disk(_clone_drive(tmp_path / "later", INSTANCE_ID, "later", ""), 2, "later")
        guest.wait_for_markers([rf"^yunstack: /dev/vd. holds a config drive of instance {INSTANCE_ID}; "
                                rf"this guest is instance {CLONE_ID}: left alone$"], RESUME_TIMEOUT, after=booted)
    finally:
        guest.kill()
    assert resumed[2].group(1) != first[0].group(1), "the clone kept the template's ssh host key"
    assert served == resumed[2].group(1), (served, resumed[2].group(1))
    # The guest's clock was set from the drive's host_time (written when the ISO was built, and
    # rounded to the second): not 2020 any more, and not ahead of the host.
    assert built - 1 <= int(resumed[5].group(1)) <= host_clock + 1
    assert guest.console()[booted:].count("YUNSTACK-RESUME") == 1


def _identity_args(directory: Path, ram: Path, share: bool, netdev: str) -> list[str]:
    """What the driver gives a guest laid out for memory templates (cmdline.py): its RAM in a file,
    the identity port, a NIC behind a root port."""
    return [*ROOT_PORTS, "-machine", "memory-backend=pc.ram",
            "-object", f"memory-backend-file,id=pc.ram,mem-path={ram},size=192M,share={'on' if share else 'off'}",
            "-netdev", netdev, "-device", f"virtio-net-pci,netdev=net0,id=nic0,mac={TEMPLATE_MAC},bus=hotplug1",
            "-chardev", f"socket,id=identity0,path={directory / 'id.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci,id=identity-serial0,max_ports=2",
            "-device", "virtserialport,bus=identity-serial0.0,chardev=identity0,name=org.yunstack.identity"]


TEMPLATE_MAC = "0e:79:75:6e:00:00"
# What slirp's DHCP server gives its first guest (QEMU's user-mode network: 10.0.2.0/24, DNS at .3).
SLIRP_LEASE = Ipv4Config(address="10.0.2.15/24", gateway="10.0.2.2", dns=("10.0.2.3",), domain="", mtu=1500)
CLONE_MAC = "fa:16:3e:12:34:56"


async def _qmp_session(path: Path, *commands: tuple[str, dict[str, Any] | None]) -> list[Any]:
    async with open_session(path, "tiny-image-test") as qmp:
        return [await qmp.execute(command, arguments) for command, arguments in commands]


def test_a_clone_takes_its_identity_and_its_own_mac_from_its_identity_port(tiny_image: Path, tmp_path: Path) -> None:
    """The way a memory template's clone is given its identity (docs/explanation/memory-templates.md):
    the template guest boots with its NIC on a dead end and is saved; the clone, its NIC now on a
    network, is sent its config drive's files, MACs and the address DHCP gives it over the identity
    port, and takes them (hotplug's own resume, resume.c); its lease confirms the address."""
    ram, state = tmp_path / "ram", tmp_path / "state"
    (tmp_path / "tpl").mkdir()
    made = Guest(tiny_image, tmp_path / "tpl", None,
                 _identity_args(tmp_path / "tpl", ram, True, "hubport,id=net0,hubid=0"))
    made.start()
    try:
        made.wait_for_markers([r"^YUNSTACK-READY hostname=yunstack ip=none instance-id=none "], BOOT_TIMEOUT + 10)
        made.wait_quiet()
        (chardevs,) = asyncio.run(_qmp_session(made.qmp_socket, ("query-chardev", None)))
        assert {c["label"]: c["frontend-open"] for c in chardevs}["identity0"], "the listener has no port open"
        asyncio.run(_save(made.qmp_socket, state))
    finally:
        made.kill()
    (tmp_path / "clone").mkdir()
    ssh_port = _free_port()
    clone = Guest(tmp_path / "tpl" / "overlay.qcow2", tmp_path / "clone", None,
                  [*_identity_args(tmp_path / "clone", ram, False,
                                   f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
                   "-incoming", "defer"])
    clone.start()
    try:
        drive = ConfigDrive(meta_data={"uuid": CLONE_ID, "name": "clone-2", "hostname": "clone-2.example",
                                       "public_keys": {"clone": CLONE_KEY}, "random_seed": "c2VlZA==" * 86,
                                       "meta": {"role": "db"}},
                            # 64 KiB of user data (Nova's limit): a message QEMU hands on in many pieces.
                            user_data=b"#!/bin/sh\n# " + b"y" * 65_000 + b"\n"
                                      b"echo \"mac-now $(cat /sys/class/net/eth0/address)\"\n"
                                      b"echo \"addr-now $(ip -4 -o addr show dev eth0 | awk '{print $4}')\"\n"
                                      b"echo \"dns-now $(cat /etc/resolv.conf)\"\n"
                                      b"echo \"files-now $(hostname) $(cat /etc/hostname)"
                                      b" $(cat /run/yunstack/meta/role) $(cat /run/yunstack/instance-id)"
                                      b" $(wc -l < /root/.ssh/authorized_keys)\"\n")
        host_key = identity.HostKey()
        # slirp's DHCP gives the first guest 10.0.2.15; the host tells the clone so, as a cloud's would.
        asyncio.run(_start_clone(clone.qmp_socket, state, tmp_path / "clone" / "id.sock",
                                 identity.message(drive, [(TEMPLATE_MAC, CLONE_MAC)], host_key,
                                                  addresses=[(CLONE_MAC, SLIRP_LEASE)])))
        resumed = clone.wait_for_markers(
            [rf"^YUNSTACK-RESUME instance-id={CLONE_ID} was=none$",
             rf"^YUNSTACK-METADATA instance-id={CLONE_ID} hostname=clone-2 source=identity-port$",
             r"^YUNSTACK-SSH-HOSTKEY (ssh-ed25519 \S+)$",
             rf"^mac-now {CLONE_MAC}$",
             r"^addr-now 10\.0\.2\.15/24$",  # set before the lease came
             r"^dns-now nameserver 10\.0\.2\.3$",
             rf"^files-now clone-2 clone-2 db {CLONE_ID} 1$",
             rf"^YUNSTACK-READY hostname=clone-2 ip=10\.0\.2\.15 instance-id={CLONE_ID} "], RESUME_TIMEOUT)
        # The lease, before or after READY: the guest's DHCP client ran beside the rest.
        clone.wait_for_markers([r"^YUNSTACK-LEASE interface=eth0 ip=10\.0\.2\.15$"], RESUME_TIMEOUT)
        # The guest told QEMU its MAC (virtio-net's control queue): frames leave with the clone's own.
        (filters,) = asyncio.run(_qmp_session(clone.qmp_socket, ("query-rx-filter", {"name": "nic0"})))
        assert filters[0]["main-mac"] == CLONE_MAC
        # The new dropbear serves the key the host sent (made by the host: no keygen in the guest).
        assert resumed[2].group(1) == host_key.public == _host_key(ssh_port)
        assert "YUNSTACK-BOOT" not in clone.console()  # resumed, not booted
    finally:
        clone.kill()


async def _save(qmp_socket: Path, state: Path) -> None:
    async with open_session(qmp_socket, "template") as qmp:
        await template.save(qmp, state, "template", timeout=60)


async def _start_clone(qmp_socket: Path, state: Path, port: Path, message: bytes) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    await wait_for_qmp(qmp_socket, "clone", deadline)
    async with open_session(qmp_socket, "clone") as qmp:
        await template.start(qmp, state, "clone", timeout=60)
    await identity.send(port, message, "clone")


def test_a_guest_with_an_identity_takes_no_other_from_a_hot_plugged_disk(
        boot_guest_with_ports: GuestFactory, tmp_path: Path) -> None:
    # The guest prints when the kernel has the data disk, so the test knows that the disk's uevent
    # came before the next drive's (the guest runs its hook for one uevent after the other).
    guest = boot_guest_with_ports(
        "#!/bin/sh\n(until [ -e /sys/block/vdc ]; do usleep 20000; done; printf '\\nsaw-vdc\\n') > /dev/console &\n")
    guest.wait_for_markers([rf"^YUNSTACK-READY hostname=tinytest ip=none instance-id={INSTANCE_ID} "], BOOT_TIMEOUT)
    booted = len(guest.console())
    # A disk that holds a config drive's files under another label: read, it would resume the guest.
    write_tree(ConfigDrive(meta_data={"uuid": "data-disk", "hostname": "data"}), tmp_path / "data")
    data = tmp_path / "data.iso"
    subprocess.run(["genisoimage", "-o", str(data), "-quiet", "-J", "-r", "-V", "data", str(tmp_path / "data")],
                   check=True, capture_output=True)  # fmt: skip
    guest.plug_disk(data, 0, "data")
    guest.wait_for_markers([r"^saw-vdc$"], RESUME_TIMEOUT, after=booted)
    # Config drives, its own and another instance's (as a volume labelled config-2 could be): left alone.
    guest.plug_disk(_clone_drive(tmp_path / "same", INSTANCE_ID, "same", ""), 1, "same")
    guest.wait_for_markers([r"^yunstack: /dev/vd. is this guest's own config drive: kept for its next boot$"],
                           RESUME_TIMEOUT, after=booted)
    guest.plug_disk(_clone_drive(tmp_path / "other", CLONE_ID, "other", "#!/bin/sh\necho other-ran\n"), 2, "other")
    guest.wait_for_markers([rf"^yunstack: /dev/vd. holds a config drive of instance {CLONE_ID}; "
                            rf"this guest is instance {INSTANCE_ID}: left alone$"], RESUME_TIMEOUT, after=booted)
    after = guest.console()[booted:]
    assert "YUNSTACK-" not in after and "data-disk" not in after and "other-ran" not in after


@pytest.fixture
def boot_guest_with_ports(tiny_image: Path, tmp_path: Path) -> Iterator[GuestFactory]:
    """Like ``boot_guest``, with empty root ports to hot-plug into."""
    yield from _guests(tiny_image, tmp_path, ROOT_PORTS)
