"""Build the tiny guest image offline from the host's Debian packages.

The image is one self-contained qcow2, booted like any cloud image: an MBR with syslinux, and
one FAT16 partition holding syslinux, the Debian cloud kernel and an initramfs that *is* the
whole OS (busybox, virtio modules, dropbear, memload, reseed, hotplug and the files in ``guest/``).  The guest
runs from RAM, so nothing it writes survives a reboot.

Everything is written without root, loop devices or mounts: the initramfs is a ``newc`` cpio
written here, the FAT filesystem is filled through mtools, and the partition table is written
here too.  The result is cached in ``out_dir`` under a hash of every input.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import importlib.resources
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from yunstack.errors import DriverMisconfigured

__all__ = ["IMAGE_NAME", "MANIFEST_NAME", "build_tiny_image"]

IMAGE_NAME = "tiny.qcow2"
MANIFEST_NAME = "tiny.json"

# Bumped by hand when the layout changes in a way the input hash cannot see.
_FORMAT = 1

# What the guest loads at boot; their dependencies are added at build time.
_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_balloon",  # free page reporting is built in (CONFIG_PAGE_REPORTING=y)
    "virtio_rng",
    "virtio_console",
    "virtio_scsi",
    "sd_mod",
    "sr_mod",
    "ata_piix",  # IDE cdrom config drives on the pc machine type
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859-1",
    "button",  # the ACPI power button, so that system_powerdown reaches acpid
    "evdev",  # acpid reads the button from /dev/input/event*
)

# (file in guest/, path in the image, mode)
_GUEST_FILES = (
    ("init", "init", 0o755),
    ("inittab", "etc/inittab", 0o644),
    ("rcS", "etc/init.d/rcS", 0o755),
    ("rcK", "etc/init.d/rcK", 0o755),
    ("cloudinit", "sbin/yunstack-cloudinit", 0o755),
    ("console", "sbin/yunstack-console", 0o755),
    ("udhcpc.script", "usr/share/udhcpc/default.script", 0o755),
    ("acpi-power-button", "etc/acpi/PWRF/00000080", 0o755),
    ("jsonflat.awk", "usr/lib/yunstack/jsonflat.awk", 0o644),
    ("profile", "etc/profile", 0o644),
    ("passwd", "etc/passwd", 0o644),
    ("group", "etc/group", 0o644),
    ("shadow", "etc/shadow", 0o600),
    ("hostname", "etc/hostname", 0o644),
)
# Small C programs compiled statically on the build host: (sources in guest/, path in the image).
_PROGRAMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("memload.c",), "usr/bin/memload"),
    (("reseed.c",), "usr/sbin/reseed"),
    (("hotplug.c", "resume.c", "resume.h"), "sbin/yunstack-hotplug"),
)

_EMPTY_DIRS = (
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("mnt", 0o755),
    ("etc/dropbear", 0o700),
    ("var/log", 0o755),
)

_DISK_MIB = 64
_PART_START_SECTOR = 2048  # 1 MiB, the usual alignment
_SECTOR = 512
_MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
_DROPBEAR = (Path("/usr/sbin/dropbear"), Path("/usr/bin/dropbearkey"))
_SYSLINUX_CFG = """\
SERIAL 0 115200
DEFAULT yunstack
PROMPT 0
TIMEOUT 0
LABEL yunstack
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=tty0 console=ttyS0,115200n8 quiet
"""

Progress = Callable[[str, float], None]


@dataclass(frozen=True, kw_only=True)
class _Host:
    """The host files and tools one build reads, found and checked up front."""

    kernel_version: str
    vmlinuz: Path
    module_dir: Path
    busybox: Path
    dropbear: bool
    tools: dict[str, str]


def build_tiny_image(out_dir: Path, *, progress: Progress | None = None) -> Path:
    """Build the tiny image into ``out_dir`` and return the path of its qcow2.

    Returns at once when ``out_dir`` already holds an image built from the same inputs.
    ``progress`` is called with a short description of each step and the fraction done.
    Raises ``DriverMisconfigured`` naming the Debian package to install when a tool or
    file is missing.
    """
    report: Progress = progress or (lambda _step, _fraction: None)
    report("checking host tools", 0.0)
    host = _find_host()
    digest = _input_hash(host)
    out_dir.mkdir(parents=True, exist_ok=True)
    image = out_dir / IMAGE_NAME
    manifest = out_dir / MANIFEST_NAME
    with _locked(out_dir / ".tiny.lock"):
        if _is_cached(image, manifest, digest):
            report("cached", 1.0)
            return image
        started = time.monotonic()
        # Gone until the new image is complete, so a crash mid-build cannot pair an old
        # manifest with a new image.
        manifest.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tiny-build-") as tmp:
            work = Path(tmp)
            report("compiling memload, reseed and hotplug", 0.1)
            programs = {path: _compile(host, work, sources) for sources, path in _PROGRAMS}
            report("collecting kernel modules", 0.25)
            modules = _resolve_modules(host)
            report("writing initramfs", 0.4)
            tree = _guest_tree(host, modules, programs)
            initrd = work / "initrd.img"
            initrd_bytes = gzip.compress(_cpio(tree), compresslevel=6, mtime=0)
            initrd.write_bytes(initrd_bytes)
            report("writing boot filesystem", 0.6)
            disk = _disk(host, initrd, work)
            report("converting to qcow2", 0.8)
            partial = work / IMAGE_NAME
            _run(host, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(partial))
            os.replace(partial, image)
        info = {
            "input_hash": digest,
            "format": _FORMAT,
            "kernel": host.kernel_version,
            "modules": [ko.name.removesuffix(".ko") for ko in modules],
            "ssh": host.dropbear,
            "initrd_bytes": len(initrd_bytes),
            "image_bytes": image.stat().st_size,
            "virtual_mib": _DISK_MIB,
            "build_seconds": round(time.monotonic() - started, 2),
        }
        # Written last: a crash before this point leaves no manifest, so no false cache hit.
        manifest.write_text(json.dumps(info, indent=2) + "\n")
    report("done", 1.0)
    return image


# ---------------------------------------------------------------- host discovery


def _find_host() -> _Host:
    tools: dict[str, str] = {}
    for tool, package in (
        ("modprobe", "kmod"),
        ("gcc", "gcc"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("syslinux", "syslinux"),
        ("qemu-img", "qemu-utils"),
        ("ldd", "libc-bin"),
    ):
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if found is None:
            raise DriverMisconfigured(detail=f"{tool} not found; install the Debian package {package}")
        tools[tool] = found
    libc_a = subprocess.run(
        [tools["gcc"], "-print-file-name=libc.a"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not os.path.isabs(libc_a):
        raise DriverMisconfigured(
            detail="libc.a not found, so memload, reseed and hotplug cannot be linked statically; install libc6-dev"
        )
    if not _MBR_CODE.is_file():
        raise DriverMisconfigured(detail=f"{_MBR_CODE} not found; install the Debian package syslinux-common")

    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"), key=lambda p: _version_key(p.name))
    if not kernels:
        raise DriverMisconfigured(
            detail="no /boot/vmlinuz-*-cloud-amd64; install the Debian package linux-image-cloud-amd64"
        )
    vmlinuz = kernels[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    module_dir = Path("/lib/modules") / version
    if not (module_dir / "modules.dep").is_file():
        raise DriverMisconfigured(detail=f"{module_dir}/modules.dep missing; reinstall linux-image-{version}")
    if not os.access(vmlinuz, os.R_OK):
        raise DriverMisconfigured(detail=f"{vmlinuz} is not readable by this user")

    busybox = Path("/bin/busybox")
    if not busybox.is_file() or not _is_static_elf(busybox):
        raise DriverMisconfigured(detail="a static /bin/busybox is needed; install the Debian package busybox-static")
    # dropbear is optional: without it the image simply has no ssh server.
    dropbear = all(path.is_file() for path in _DROPBEAR)
    return _Host(
        kernel_version=version,
        vmlinuz=vmlinuz,
        module_dir=module_dir,
        busybox=busybox,
        dropbear=dropbear,
        tools=tools,
    )


def _version_key(name: str) -> list[int]:
    return [int(part) for part in name.replace("-", ".").split(".") if part.isdigit()]


def _is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP header, i.e. needs no dynamic loader."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only, like our kernel
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _input_hash(host: _Host) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("format", str(_FORMAT).encode())
    add("builder", Path(__file__).read_bytes())
    for name in sorted([name for name, _, _ in _GUEST_FILES] + [s for sources, _ in _PROGRAMS for s in sources]):
        add(f"guest/{name}", _guest_file(name))
    add("kernel", host.vmlinuz.read_bytes())
    add("modules.dep", (host.module_dir / "modules.dep").read_bytes())
    add("busybox", host.busybox.read_bytes())
    add("mbr", _MBR_CODE.read_bytes())
    for path in _DROPBEAR if host.dropbear else ():
        add(str(path), path.read_bytes())
    # A tool's resolved path, size and mtime stand in for its version: cheap, and they
    # change whenever the package is upgraded.
    for tool in ("gcc", "syslinux", "mkfs.vfat"):
        real = Path(host.tools[tool]).resolve()
        st = real.stat()
        add(tool, f"{real}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _is_cached(image: Path, manifest: Path, digest: str) -> bool:
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("input_hash") == digest and image.is_file()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builders sharing one out_dir; the second one then finds the cache."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(host: _Host, tool: str, *args: str) -> str:
    """Run a host tool found by ``_find_host`` (or a path) and return its stdout."""
    argv = [host.tools.get(tool, tool), *args]
    # mtools refuses odd FAT geometries on image files unless told not to check.
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}
    try:
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
    except OSError as exc:
        raise DriverMisconfigured(detail=f"cannot run {tool}: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise DriverMisconfigured(detail=f"{' '.join(argv)} failed ({done.returncode}): {err}")
    return done.stdout.decode(errors="replace")


# ---------------------------------------------------------------- guest contents


def _guest_file(name: str) -> bytes:
    # Through importlib.resources, so that it also works from a wheel or a zip.
    return (importlib.resources.files("yunstack.image.tiny") / "guest" / name).read_bytes()


@dataclass(frozen=True)
class _Entry:
    """One member of the initramfs."""

    mode: int  # including the S_IF* type bits
    data: bytes = b""  # file contents, or a symlink's target
    rdev: tuple[int, int] = (0, 0)


def _compile(host: _Host, work: Path, sources: tuple[str, ...]) -> bytes:
    """One of ``_PROGRAMS`` (its C files and headers), linked statically: the guest has no C library."""
    for name in sources:
        (work / name).write_bytes(_guest_file(name))
    name = sources[0]
    binary = work / name.removesuffix(".c")
    try:
        _run(host, "gcc", "-static", "-O2", "-s", "-Wall", "-o", str(binary),
             *(str(work / s) for s in sources if s.endswith(".c")))
    except DriverMisconfigured as exc:
        raise DriverMisconfigured(
            detail=f"compiling {name} failed (needs the Debian packages gcc and libc6-dev): {exc.text}"
        ) from exc
    return binary.read_bytes()


def _resolve_modules(host: _Host) -> list[Path]:
    """Module files in a load order where every dependency comes first."""
    order: list[Path] = []
    for module in _MODULES:
        out = _run(host, "modprobe", "-S", host.kernel_version, "--show-depends", module)
        for line in out.splitlines():
            words = line.split()
            # "builtin x" lines need nothing loaded.
            if len(words) >= 2 and words[0] == "insmod":
                ko = Path(words[1])
                if ko not in order:
                    order.append(ko)
    return order


def _guest_tree(host: _Host, modules: Sequence[Path], programs: dict[str, bytes]) -> dict[str, _Entry]:
    tree: dict[str, _Entry] = {}

    def add_dirs(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            tree.setdefault("/".join(parts[:i]), _Entry(stat.S_IFDIR | 0o755))

    def add_file(path: str, data: bytes, mode: int) -> None:
        add_dirs(path)
        tree[path] = _Entry(stat.S_IFREG | mode, data)

    def add_link(path: str, target: str) -> None:
        add_dirs(path)
        tree[path] = _Entry(stat.S_IFLNK | 0o777, target.encode())

    for path, mode in _EMPTY_DIRS:
        add_dirs(path + "/")
        tree[path] = _Entry(stat.S_IFDIR | mode)
    # The kernel's built-in initramfs has /dev/console too; ours keeps /init's
    # stdio working even on kernels built without it.
    tree["dev/console"] = _Entry(stat.S_IFCHR | 0o600, rdev=(5, 1))
    add_link("var/run", "../run")

    add_file("bin/busybox", host.busybox.read_bytes(), 0o755)
    for applet in _run(host, str(host.busybox), "--list-full").split():
        if applet != "bin/busybox" and applet != "linuxrc":
            add_link(applet, "/bin/busybox")

    kver = host.kernel_version
    load_order = []
    for ko in modules:
        rel = ko.relative_to(host.module_dir).as_posix()
        add_file(f"lib/modules/{kver}/{rel}", ko.read_bytes(), 0o644)
        load_order.append(f"{kver}/{rel}")
    add_file("lib/modules/load-order", "".join(line + "\n" for line in load_order).encode(), 0o644)

    if host.dropbear:
        for binary in _DROPBEAR:
            add_file(binary.as_posix().lstrip("/"), binary.read_bytes(), 0o755)
            for lib in _shared_libraries(host, binary):
                add_file(lib.as_posix().lstrip("/"), lib.resolve().read_bytes(), 0o755)

    for path, program in programs.items():
        add_file(path, program, 0o755)
    for name, path, mode in _GUEST_FILES:
        add_file(path, _guest_file(name), mode)
    return tree


def _shared_libraries(host: _Host, binary: Path) -> list[Path]:
    """What ldd says a dynamic binary loads, at the paths the loader will look for them."""
    libs = []
    for line in _run(host, "ldd", str(binary)).splitlines():
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        words = [w for w in line.split() if w.startswith("/")]
        if words:
            libs.append(Path(words[0]))
    return libs


def _cpio(tree: dict[str, _Entry]) -> bytes:
    """The tree as a newc cpio archive, owned by root with mtime 0, so builds are reproducible."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    def member(ino: int, name: str, entry: _Entry) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            ino, entry.mode, 0, 0, 1, 0, len(entry.data),
            0, 0, entry.rdev[0], entry.rdev[1], len(encoded), 0,
        )  # fmt: skip
        out.write(b"070701" + b"".join(b"%08X" % field for field in fields))
        out.write(encoded)
        pad()
        out.write(entry.data)
        pad()

    # Sorted, so that every directory comes before what it holds.
    for ino, name in enumerate(sorted(tree), start=1):
        member(ino, name, tree[name])
    member(0, "TRAILER!!!", _Entry(0))
    return out.getvalue()


# ---------------------------------------------------------------- the disk


def _disk(host: _Host, initrd: Path, work: Path) -> Path:
    """A raw disk: syslinux MBR, one bootable FAT16 partition with kernel and initramfs."""
    part_sectors = _DISK_MIB * 1024 * 1024 // _SECTOR - _PART_START_SECTOR
    boot = work / "boot.img"
    cfg = work / "syslinux.cfg"
    cfg.write_text(_SYSLINUX_CFG)
    vmlinuz = work / "vmlinuz"
    shutil.copyfile(host.vmlinuz, vmlinuz)
    _run(
        host, "mkfs.vfat", "-F", "16", "-n", "YUNSTACK", "-i", "59554e53",
        "-h", str(_PART_START_SECTOR), "-C", str(boot), str(part_sectors * _SECTOR // 1024),
    )  # fmt: skip
    _run(host, "mcopy", "-i", str(boot), str(vmlinuz), str(initrd), str(cfg), "::/")
    _run(host, "syslinux", "--install", str(boot))

    disk = work / "disk.raw"
    with disk.open("wb") as f:
        f.write(_mbr(_MBR_CODE.read_bytes(), _PART_START_SECTOR, part_sectors))
        f.seek(_PART_START_SECTOR * _SECTOR)
        with boot.open("rb") as src:
            shutil.copyfileobj(src, f, 1024 * 1024)
        f.truncate(_DISK_MIB * 1024 * 1024)
    return disk


def _mbr(code: bytes, start: int, sectors: int) -> bytes:
    """One MBR sector: boot code, a fixed disk signature, and one active FAT16 partition."""

    def chs(lba: int) -> bytes:
        # 255 heads x 63 sectors; syslinux's MBR uses LBA anyway when the BIOS has EDD.
        cyl, rest = divmod(lba, 255 * 63)
        if cyl > 1023:
            return b"\xfe\xff\xff"
        head, sector = divmod(rest, 63)
        return bytes((head, (sector + 1) | ((cyl >> 2) & 0xC0), cyl & 0xFF))

    fat16_lba = 0x0E
    entry = (
        b"\x80" + chs(start) + bytes((fat16_lba,)) + chs(start + sectors - 1)
        + struct.pack("<II", start, sectors)
    )  # fmt: skip
    table = entry + b"\0" * 48
    return code[:440].ljust(440, b"\0") + b"YUNS" + b"\0\0" + table + b"\x55\xaa"
