"""A template's page-cache residency, as ``mincore`` reports it for a file on this host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from yunstack.compute.qemu import pagecache
from yunstack.compute.qemu.pagecache import resident_bytes

MIB = 1 << 20


def written(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())  # clean pages: fadvise may drop them
    return path


def test_a_file_just_read_is_resident_and_dropping_it_from_the_cache_shows(tmp_path: Path) -> None:
    ram = written(tmp_path / "ram", 4 * MIB)
    ram.read_bytes()
    assert resident_bytes(ram) == 4 * MIB
    fd = os.open(ram, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    # tmpfs pages cannot be dropped (they are the file); on a disk file system clean pages go at
    # once, unless another process maps them (none does here)
    assert resident_bytes(ram) <= (4 * MIB if _on_tmpfs(ram) else MIB)


def test_a_partly_read_file_counts_what_was_read(tmp_path: Path) -> None:
    ram = written(tmp_path / "ram", 8 * MIB)
    fd = os.open(ram, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.pread(fd, 2 * MIB, 0)
    finally:
        os.close(fd)
    # readahead may bring in more than was read, never less, never more than the file
    assert 2 * MIB <= resident_bytes(ram) <= 8 * MIB


@pytest.mark.parametrize("size", [0, None], ids=["empty", "missing"])
def test_an_empty_or_missing_file_has_nothing_resident(tmp_path: Path, size: int | None) -> None:
    ram = tmp_path / "ram"
    if size is not None:
        ram.write_bytes(b"")
    assert resident_bytes(ram) == 0


def test_a_file_that_cannot_be_mapped_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="mmap"):
        resident_bytes(tmp_path)  # a directory opens read-only but cannot be mapped


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2] == "tmpfs"


def test_a_file_larger_than_one_window_is_counted_in_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagecache, "_WINDOW_PAGES", 256)  # 1 MiB windows; the file is 3.5 of them
    ram = written(tmp_path / "ram", 3 * MIB + MIB // 2)
    ram.read_bytes()
    assert resident_bytes(ram) == 3 * MIB + MIB // 2
