"""How much of a file sits in the host's page cache: ``mincore(2)`` over a read-only mapping.

A memory template's RAM file is mapped privately by every clone; the pages no clone wrote are the
file's page cache, shared by all of them and counted once in the memory ledger
(docs/explanation/memory-templates.md).  ``mincore`` answers per page without reading the file, so
measuring faults nothing in and changes no page's age.  Python's ``mmap`` module hides a mapping's
address, so the mapping is made with libc's ``mmap`` through ctypes.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_mincore = _libc.mincore
_mincore.restype = ctypes.c_int
_mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
_MAP_FAILED = ctypes.c_void_p(-1).value
# mincore sets only the lowest bit of each page's byte; the others are undefined.
_RESIDENT = bytes(b & 1 for b in range(256))
# Pages asked about per mincore call: a 64 GiB template needs no 16 MiB vector, 1 GiB at a time.
_WINDOW_PAGES = 1 << 18


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` resident in the page cache; 0 for an empty or missing file.

    Raises ``OSError`` when the file exists but cannot be opened or mapped.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        addr = _mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)  # the mapping keeps the file; the descriptor is not needed any more
    try:
        resident = 0
        vec = (ctypes.c_ubyte * min(_WINDOW_PAGES, -(-size // mmap.PAGESIZE)))()
        for start in range(0, size, _WINDOW_PAGES * mmap.PAGESIZE):
            length = min(size - start, _WINDOW_PAGES * mmap.PAGESIZE)
            if _mincore(addr + start, length, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore: {os.strerror(err)}", str(path))
            pages = -(-length // mmap.PAGESIZE)
            resident += bytes(vec)[:pages].translate(_RESIDENT).count(1)
    finally:
        _munmap(addr, size)
    return min(size, resident * mmap.PAGESIZE)
