"""Base images cached on this host, one file per image id, fetched once and shared by overlays."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from yunstack.agent.link import ControlPlane


class ImageCache:
    def __init__(self, root: Path, link: ControlPlane) -> None:
        self.root = root
        self._link = link
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def ensure(self, image_id: str) -> tuple[Path, str]:
        """The cached file and its format, fetching it first if needed (one fetch per image)."""
        with self._guard:
            lock = self._locks.setdefault(image_id, threading.Lock())
        with lock:
            path = self.root / image_id
            meta = self.root / f"{image_id}.json"
            if path.exists() and meta.exists():
                return path, str(json.loads(meta.read_text())["disk_format"])
            self.root.mkdir(parents=True, exist_ok=True)
            partial = self.root / f".{image_id}.part"
            fmt = self._link.fetch_image(image_id, partial)
            partial.replace(path)
            meta.write_text(json.dumps({"disk_format": fmt}))
            return path, fmt
