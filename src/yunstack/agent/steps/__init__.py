"""The host's half of every operation (one module per verb family) and their registry.

``STEPS`` maps an operation's name to the step the agent runs for it; the control plane's half is
``compute.operations`` under the same names.  Nothing here decides a ``vm_state``: a step reports
the guest's power state and its typed result, the control plane decides the rest.
"""

from __future__ import annotations

from yunstack.agent.steps import coldmigration, images, interfaces, lifecycle, migration, power, volumes
from yunstack.agent.steps.base import Host, Report, Step

STEPS: dict[str, Step] = {s.name: s for s in (*power.STEPS, *images.STEPS, *interfaces.STEPS, *lifecycle.STEPS,
                                         *migration.STEPS, *coldmigration.STEPS, *volumes.STEPS)}

__all__ = ["STEPS", "Host", "Report", "Step"]
