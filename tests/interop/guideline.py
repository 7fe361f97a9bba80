"""Derive our target list from an interop guideline file (openstack-archive/interop, e.g. 2020.06.json).

Only the derived list (``targets-2020.06.json``) is committed, never the guideline itself:

    python -m tests.interop.guideline /path/to/2020.06.json > tests/interop/targets-2020.06.json

Tests are identified by their idempotent id, so a test that Tempest renamed or moved since the
guideline was written is still found (see ``tests.interop.tempest_list``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PLATFORM = "OpenStack Powered Compute"
# Capabilities that need block storage: every volume capability plus attaching volumes to servers.
VOLUME_CAPABILITY_PREFIXES = ("volumes-",)
VOLUME_CAPABILITIES = frozenset({"compute-volume-attach"})


def needs_block_storage(capability: str) -> bool:
    return capability.startswith(VOLUME_CAPABILITY_PREFIXES) or capability in VOLUME_CAPABILITIES


def derive(guideline: dict[str, Any], platform: str = PLATFORM) -> dict[str, Any]:
    """The required tests of ``platform``: name, idempotent id, capability, flagged, needs block storage."""
    components = [c["name"] for c in guideline["platforms"][platform]["components"]]
    tests: list[dict[str, Any]] = []
    for component in components:
        for capability in guideline["components"][component]["capabilities"]["required"]:
            for name, info in sorted(guideline["capabilities"][capability]["tests"].items()):
                tests.append({
                    "name": name,
                    "idempotent_id": str(info["idempotent_id"]).removeprefix("id-"),
                    "capability": capability,
                    "flagged": "flagged" in info,
                    "volume": needs_block_storage(capability),
                })
    meta = guideline["metadata"]
    return {
        "comment": (f"Derived from the OpenStack interop guideline {meta['id']} ({meta.get('source', '')}), "
                    f"platform '{platform}', required capabilities; regenerate with "
                    "`python -m tests.interop.guideline 2020.06.json`."),
        "guideline": meta["id"],
        "platform": platform,
        "tests": tests,
    }


def main(argv: list[str]) -> int:
    guideline = json.loads(Path(argv[1]).read_text())
    json.dump(derive(guideline), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
