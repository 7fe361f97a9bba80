"""rebuild: a fresh root disk from a (new) image; the server returns to the power state it had."""

from __future__ import annotations

from yunstack.compute import states as st
from yunstack.compute.operations.base import Operation, allowed
from yunstack.protocol import Outcome, RebuildArgs
from yunstack.protocol.steps import REBUILD_SPAWNING


def _after(outcome: Outcome, args: RebuildArgs | None) -> str:
    # A stopped server stays SHUTOFF (Nova); the host left its new guest powered off.
    return st.STOPPED if args is not None and args.keep_stopped else st.ACTIVE


# The body (imageRef, name, metadata, ...) is parsed by the API into ``compute.lifecycle.Rebuild``.
REBUILD = Operation(name="rebuild", args=RebuildArgs, task=st.REBUILDING, event="compute_rebuild_instance",
                    action="rebuild", verb="rebuild", allowed=allowed(st.ACTIVE, st.STOPPED, st.ERROR),
                    on_success=_after, launches=True, progress=frozenset({REBUILD_SPAWNING}))
