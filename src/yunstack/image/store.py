"""Where image bytes live: the ``ImageStore`` protocol and the local filesystem store.

A write is staged in a temporary file inside the store and becomes visible only by an atomic
rename, so a crash or a failed upload never leaves a half-written image under its final name.
OS errors are translated to ``DriverError`` at this edge.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from yunstack.errors import DriverError, NotFound

CHUNK = 1 << 20


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DriverError(detail=f"image store: {what}: {exc.strerror or exc}") from exc


class Staged(Protocol):
    """An image being written: bytes go in with ``write``; ``path`` is readable for inspection."""

    @property
    def path(self) -> Path:
        """A local file holding the bytes written so far (after ``flush``, all of them)."""

    def write(self, chunk: bytes) -> None:
        """Append a chunk."""

    def flush(self) -> None:
        """Make every written byte durable and readable at ``path``."""


class ImageStore(Protocol):
    """An image data store; keys are opaque strings kept in the image row's ``location``."""

    def stage(self, image_id: str) -> Staged:
        """Start writing the data of ``image_id``; nothing is visible until ``commit``."""

    def commit(self, staged: Staged, image_id: str) -> str:
        """Publish a staged write atomically; returns the key to store in ``location``."""

    def discard(self, staged: Staged) -> None:
        """Throw a staged write away (idempotent)."""

    def open(self, key: str) -> BinaryIO:
        """Open stored data for reading; raises ``NotFound`` if it is gone."""

    def local_path(self, key: str) -> Path:
        """A local path of stored data, for QEMU to boot from."""

    def delete(self, key: str) -> None:
        """Remove stored data (idempotent)."""


class _LocalStaged:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fh: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed by flush/discard

    @property
    def path(self) -> Path:
        return self._path

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None, "write after flush"
        with _os_errors("write"):
            self._fh.write(chunk)

    def flush(self) -> None:
        if self._fh is None:
            return
        with _os_errors("flush"):
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class LocalImageStore:
    """Files named by image id under ``root``; staging happens in ``root/.staging`` (same filesystem)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / ".staging"

    def _ensure(self) -> None:
        with _os_errors("create directories"):
            self._staging.mkdir(parents=True, exist_ok=True)

    def stage(self, image_id: str) -> Staged:
        self._ensure()
        with _os_errors("create staging file"):
            return _LocalStaged(self._staging / f"{image_id}.{secrets.token_hex(4)}")

    def commit(self, staged: Staged, image_id: str) -> str:
        staged.flush()
        with _os_errors("publish"):
            os.replace(staged.path, self.root / image_id)
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return image_id

    def discard(self, staged: Staged) -> None:
        if isinstance(staged, _LocalStaged):
            staged.close()
        with contextlib.suppress(FileNotFoundError), _os_errors("discard"):
            staged.path.unlink()

    def local_path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise NotFound(kind="image data", id=key)
        return self.root / key

    def open(self, key: str) -> BinaryIO:
        try:
            with _os_errors("open"):
                return open(self.local_path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(kind="image data", id=key) from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError), _os_errors("delete"):
            self.local_path(key).unlink()

    def staged_files(self) -> list[Path]:
        """Leftover staging files (a crash mid-upload); for cleanup at start and for tests."""
        return sorted(self._staging.glob("*")) if self._staging.exists() else []


def read_chunks(fh: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield a file's bytes chunk by chunk and close it at the end (or when the consumer stops)."""
    try:
        while data := fh.read(chunk):
            yield data
    finally:
        fh.close()
