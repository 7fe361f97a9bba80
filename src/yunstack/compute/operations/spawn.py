"""spawn: build and start a new server's guest (queued by a create once its ports exist)."""

from __future__ import annotations

from yunstack.compute import states
from yunstack.compute.operations.base import Operation, becomes
from yunstack.protocol import SpawnArgs

SPAWN = Operation(name="spawn", args=SpawnArgs, task=states.SPAWNING, event="compute_build_and_run_instance",
                  on_success=becomes(states.ACTIVE), launches=True)
