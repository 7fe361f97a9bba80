"""Which servers may start from a memory template, and what names a template (templatestore)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from yunstack.compute.driver import ConfigDrive, Disk, DiskKind, InstanceSpec, MemoryBacking, Nic, root_disk
from yunstack.compute.qemu import specfile, templatestore
from yunstack.compute.qemu.cmdline import InstancePaths, PortLayout, build_argv
from yunstack.config import QemuConfig


@pytest.fixture
def spec(tmp_path: Path) -> InstanceSpec:
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"x" * 100)
    return InstanceSpec(id="a" * 36, name="vm", hostname="vm", vcpus=1, memory_mib=128,
                        disks=root_disk(image, "qcow2", 1), memory=MemoryBacking(template=True),
                        config_drive=ConfigDrive(meta_data={"uuid": "a" * 36}),
                        nics=(Nic(tap="tapa", mac="fa:16:3e:00:00:01"),))


def _nic(i: int) -> Nic:
    return Nic(tap=f"tap{i}", mac=f"fa:16:3e:00:00:{i:02x}")


@pytest.mark.parametrize(("change", "machine", "why"), [
    ({}, "q35", None),
    ({"memory": MemoryBacking()}, "q35", "not asked for"),
    ({"memory": MemoryBacking(template=True, page_sharing=False)}, "q35", "page sharing is off"),
    ({}, "pc", "no PCIe root ports"),
    ({"balloon": False}, "q35", "balloon"),
    ({"nics": tuple(_nic(i) for i in range(4))}, "q35", "at most 3 NICs"),
    ({"config_drive": None}, "q35", "no config drive"),
])
def test_who_may_start_from_a_template(spec: InstanceSpec, change: dict[str, object], machine: str,
                                       why: str | None) -> None:
    found = templatestore.ineligible(replace(spec, **change), machine)  # type: ignore[arg-type]
    assert (found is None) if why is None else (found is not None and why in found)


def test_a_server_with_a_volume_boots(spec: InstanceSpec) -> None:
    volume = Disk(kind=DiskKind.VOLUME, source=Path("/dev/null"), format="raw", serial="v1")
    assert "no volumes" in str(templatestore.ineligible(replace(spec, disks=(*spec.disks, volume)), "q35"))


def test_the_key_names_what_must_match_and_nothing_else(spec: InstanceSpec) -> None:
    qemu = QemuConfig(accel="tcg")

    def key(s: InstanceSpec, **kw: object) -> str:
        args = {"qemu": qemu, "accel": "tcg", "qemu_version": "QEMU emulator version 7.2.22", "disk_cache": "none"}
        args.update(kw)
        return templatestore.key_of(s, **args)  # type: ignore[arg-type]

    base = key(spec)
    # A server's own identity is not in its template: every server of the shape shares one.
    other = replace(spec, id="b" * 36, name="other", hostname="other", nics=(_nic(7),),
                    config_drive=ConfigDrive(meta_data={"uuid": "b" * 36}, user_data=b"#!/bin/sh\n"))
    assert key(other) == base
    # What the state depends on is, the number of NICs among it (they are in the template).
    assert key(replace(spec, nics=())) != base
    assert key(replace(spec, nics=(_nic(1), _nic(2)))) != base
    assert key(replace(spec, memory_mib=256)) != base
    assert key(replace(spec, vcpus=2)) != base
    assert key(spec.with_root(size_gib=2)) != base
    assert key(spec, qemu_version="QEMU emulator version 8.0.0") != base
    assert key(spec, qemu=QemuConfig(accel="tcg", machine="pc-q35-7.1")) != base
    spec.root.source.write_bytes(b"y" * 200)  # the image changed under the same path
    assert key(spec) != base


def test_a_clone_argv_names_its_template_and_an_ordinary_one_none(spec: InstanceSpec, tmp_path: Path) -> None:
    root = tmp_path / "inst" / ".templates"
    paths = InstancePaths(tmp_path / "inst" / spec.id)
    qemu = QemuConfig(accel="tcg")
    clone = build_argv(spec, paths, qemu, "tcg", template_ram=root / ("k" * 32) / "ram")
    ordinary = build_argv(spec, paths, qemu, "tcg")
    assert templatestore.template_in([a.encode() for a in clone], root) == "k" * 32
    assert templatestore.template_in([a.encode() for a in ordinary], root) is None
    elsewhere = build_argv(spec, paths, qemu, "tcg", template_ram=tmp_path / "x" / "ram")
    assert templatestore.template_in([a.encode() for a in elsewhere], root) is None


def test_a_template_guest_has_no_identity_and_keeps_ports_free_for_a_clones(spec: InstanceSpec) -> None:
    shaped = templatestore.shape(spec)
    assert (shaped.config_drive, shaped.hostname) == (None, "template")
    assert [n.mac for n in shaped.nics] == [templatestore.TEMPLATE_MACS[0]]
    assert templatestore.layout(shaped).ports >= len(spec.nics) + 1 + 4
    # The guest is told which of its NICs becomes which of the clone's.
    assert templatestore.macs(spec) == [(templatestore.TEMPLATE_MACS[0], "fa:16:3e:00:00:01")]


def _devices(argv: list[str]) -> list[str]:
    """The ``-device`` values without the MAC (the state's, not the command line's, is the guest's)."""
    return [",".join(p for p in argv[i + 1].split(",") if not p.startswith("mac="))
            for i, a in enumerate(argv) if a == "-device"]


def test_a_clone_has_its_template_guests_devices_with_its_own_backends(spec: InstanceSpec, tmp_path: Path) -> None:
    """The state of the template guest loads only into the same devices: a clone has them all, its
    NICs on its own taps where the template's led nowhere, its config drive still to come."""
    spec = replace(spec, nics=(_nic(1), _nic(2)))
    qemu = QemuConfig(accel="tcg")
    shaped = templatestore.shape(spec)
    made = build_argv(shaped, InstancePaths(tmp_path / "t"), qemu, "tcg", layout=templatestore.layout(shaped),
                      template_ram=tmp_path / "ram", template_shared=True, dead_end_nics=True)
    clone = build_argv(replace(spec, config_drive=None), InstancePaths(tmp_path / spec.id), qemu, "tcg",
                       incoming=True, layout=templatestore.layout(spec), template_ram=tmp_path / "ram")
    assert _devices(made) == _devices(clone)
    netdevs = [a for i, a in enumerate(made) if made[i - 1] == "-netdev"]
    assert netdevs == ["hubport,id=net0,hubid=0", "hubport,id=net1,hubid=1"]
    assert next(a for i, a in enumerate(clone) if clone[i - 1] == "-netdev").startswith("tap,id=net0,ifname=tap1,")
    for argv in (made, clone):
        assert any(d.startswith("virtserialport,") and d.endswith("name=org.yunstack.identity") for d in _devices(argv))
    # A boot of the spec (a restore, a move's destination) has them too, and the config drive where
    # the clone gets it; only the balloon's free page reporting differs (off over a template's RAM).
    booted = build_argv(spec, InstancePaths(tmp_path / spec.id), qemu, "tcg")
    config = "virtio-blk-pci,drive=config0,id=virtio-config0,bus=hotplug4"
    assert config in _devices(booted)
    assert [d.removesuffix(",free-page-reporting=on") for d in _devices(booted) if d != config] == \
        [d.removesuffix(",free-page-reporting=off") for d in _devices(clone)]


def test_a_template_flavored_guest_has_the_same_devices_booted_or_cloned(spec: InstanceSpec, tmp_path: Path) -> None:
    """A clone plugs its config drive and NICs in behind the ports a boot of its spec puts them, so a
    restore or a migration's destination (built from the spec) takes its state."""
    layout = PortLayout.fresh(spec)
    assert layout.config == "hotplug4" and layout.nics == {"fa:16:3e:00:00:01": "hotplug5"}
    assert layout.ports == templatestore.layout(templatestore.shape(spec)).ports == 8
    argv = build_argv(spec, InstancePaths(tmp_path / spec.id), QemuConfig(accel="tcg"), "tcg")
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    ports = [i for i, d in enumerate(devices) if d.startswith("pcie-root-port")]
    behind = [i for i, d in enumerate(devices) if ",bus=hotplug" in d]
    assert [devices[i].split(",bus=")[1] for i in behind] == ["hotplug4", "hotplug5"]
    assert min(behind) > max(ports)  # a bus before what sits on it
    ordinary = replace(spec, memory=MemoryBacking())
    assert PortLayout.fresh(ordinary) == PortLayout()  # everybody else's devices do not move
    assert not any(",bus=hotplug" in d for d in build_argv(ordinary, InstancePaths(tmp_path / "o"),
                                                           QemuConfig(accel="tcg"), "tcg"))


def test_the_layout_follows_what_the_server_asked_not_what_it_may_do_now(spec: InstanceSpec) -> None:
    """Its project may turn page sharing off while it runs: a restore or a move must still find its
    devices where they are.  NICs beyond three sit on the root bus."""
    assert PortLayout.fresh(replace(spec, memory=MemoryBacking(template=True, page_sharing=False))) == \
        PortLayout.fresh(spec)
    many = replace(spec, nics=tuple(_nic(i) for i in range(5)))
    assert list(PortLayout.fresh(many).nics.values()) == ["hotplug5", "hotplug6", "hotplug7"]
    assert PortLayout.fresh(many).ports == 8


def test_a_guest_with_an_interface_plugged_in_while_it_ran_is_not_rebuilt_by_its_spec(spec: InstanceSpec) -> None:
    booted = PortLayout.fresh(spec)
    assert booted.rebuilt_from(spec)
    added = _nic(9)
    plugged = booted.nic_plugged(added.mac, "hotplug0")
    assert not plugged.rebuilt_from(replace(spec, nics=(*spec.nics, added)))
    ordinary = replace(spec, memory=MemoryBacking())
    assert PortLayout.fresh(ordinary).rebuilt_from(ordinary)
    assert not PortLayout().nic_plugged(added.mac, "hotplug1").rebuilt_from(replace(ordinary, nics=(added,)))


def _made(root: Path, key: str, made_at: float) -> Path:
    found = root / key
    found.mkdir(parents=True)
    (found / "ram").write_bytes(b"\0" * 4096)
    (found / templatestore.META).write_text(json.dumps({"key": key, "made_at": made_at}))
    return found


def test_a_template_past_its_age_starts_no_clone_and_its_successor_retires_it(tmp_path: Path) -> None:
    now = [1_000_000.0]
    root = tmp_path / ".templates"
    store = templatestore.TemplateStore(root, tmp_path / "run", QemuConfig(template_max_age_hours=24),
                                        clock=lambda: now[0])
    _made(root, "k1", now[0])
    assert store.ready("k1") is not None
    now[0] += 24 * 3600 + 1
    assert store.ready("k1") is None  # the server boots, and build_soon makes the successor
    part = _made(root, "k1.part", now[0])
    store._install(part, "k1")  # the end of the successor's build; no QEMU maps the old one
    assert store.ready("k1") is not None and not list(store.retired())
    assert sorted(p.name for p in root.iterdir()) == ["k1"]
    # No limit: a template of any age serves.
    unlimited = templatestore.TemplateStore(root, tmp_path / "run", QemuConfig(template_max_age_hours=0),
                                            clock=lambda: now[0] + 10**9)
    assert unlimited.ready("k1") is not None


def test_a_retired_template_stays_while_a_clone_maps_its_ram_file(tmp_path: Path) -> None:
    # A stand-in for a clone's QEMU: a process whose command line names the template's RAM file as
    # QEMU's would, and that maps the file itself.
    now = [1_000_000.0]
    root = tmp_path / ".templates"
    store = templatestore.TemplateStore(root, tmp_path / "run", QemuConfig(), clock=lambda: now[0])
    old = _made(root, "k2", now[0])
    mapper = subprocess.Popen(
        [sys.executable, "-c", "import mmap, sys; f = open(sys.argv[1], 'rb'); "
         "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); print('mapped', flush=True); sys.stdin.read()",
         str(old / "ram"), f"mem-path={root.resolve()}/k2/ram"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert mapper.stdout is not None and mapper.stdout.readline().strip() == "mapped"
        now[0] += 25 * 3600
        store._install(_made(root, "k2.part", now[0]), "k2")
        [(key, retired)] = store.retired()
        assert key == "k2" and (retired / "ram").exists()  # its clone still maps it
        store.prune_retired()
        assert list(store.retired())
    finally:
        mapper.communicate("")
    store.prune_retired()
    assert not list(store.retired()) and store.ready("k2") is not None


def test_a_template_guest_started_before_the_identity_port_keeps_its_devices(spec: InstanceSpec,
                                                                               tmp_path: Path) -> None:
    """Its recorded layout has no "identity" (written before the layout said), and its QEMU was
    started without the port (qemu.log): a restore of its saved state builds it without the port,
    and a live migration, whose destination a spec builds with one, is refused; a fresh start gives
    it the port.  A record as old whose QEMU had the port keeps it."""
    paths = InstancePaths(tmp_path / spec.id)
    paths.dir.mkdir()
    fresh = PortLayout.fresh(spec)
    assert fresh.identity
    specfile.save_layout(paths, fresh)
    assert specfile.load_layout(paths) == fresh
    record = json.loads(paths.ports.read_text())
    del record["identity"]
    paths.ports.write_text(json.dumps(record))
    with_port = " ".join(build_argv(spec, paths, QemuConfig(accel="tcg"), "tcg"))
    paths.qemu_log.write_text(f"--- 2026-12-01T00:00:00 starting: {with_port}\nqemu: terminating on signal 15\n")
    assert specfile.load_layout(paths) == fresh
    without = with_port.replace("id=identity0,", "id=nothing0,")
    with paths.qemu_log.open("a") as log:
        log.write(f"--- 2026-12-02T00:00:00 starting: {without}\n")
    old = specfile.load_layout(paths)
    assert old is not None and not old.identity and not old.rebuilt_from(spec)
    argv = build_argv(spec, paths, QemuConfig(accel="tcg"), "tcg", layout=old)
    assert not any("virtio-serial" in d or "virtserialport" in d for d in _devices(argv))
    restarted = build_argv(spec, paths, QemuConfig(accel="tcg"), "tcg")
    assert any(d.startswith("virtserialport,") for d in _devices(restarted))
