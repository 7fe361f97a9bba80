"""Run one lab host's dataplane: ``python -m tests.integration.lab_apply STATE_DIR TAG < pickled state``.

The VXLAN test starts this inside a lab host's network namespace (``ip netns exec``), so the
real ``LinuxDataplane`` builds its bridges, VXLAN devices and rules there, as a compute host's
agent would.  stdin is a pickled ``HostNetworkState`` (or ``None``: tear everything down); stdout
is the report as JSON.  Test-only: the pickle comes from the test itself.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
from pathlib import Path

from yunstack.network.dataplane.linux import LinuxDataplane


def main() -> None:
    state_dir, tag = Path(sys.argv[1]), sys.argv[2]
    state = pickle.loads(sys.stdin.buffer.read())
    dataplane = LinuxDataplane(state_dir, metadata_upstream="http://127.0.0.1:9/metadata", tag=tag)
    if state is None:
        asyncio.run(dataplane.teardown())
        print(json.dumps({"teardown": True}))
        return
    report = asyncio.run(dataplane.apply(state))
    print(json.dumps({"created": report.created, "changed": report.changed, "removed": report.removed,
                      "failed": report.failed}))


if __name__ == "__main__":
    main()
