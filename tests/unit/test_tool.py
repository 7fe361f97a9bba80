"""run_tool: a helper program never outlives its caller (a timeout or a cancelled step)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from yunstack.errors import DriverError
from yunstack.tool import run_tool


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


async def _until(check: bool, marker: str) -> None:
    deadline = time.monotonic() + 10
    while _running(marker) != check:
        assert time.monotonic() < deadline, f"{marker} running: {not check}"
        await asyncio.sleep(0.02)


async def test_a_cancelled_tool_is_killed_and_reaped() -> None:
    marker = f"yun-tool-{uuid.uuid4().hex}"
    task = asyncio.create_task(run_tool([sys.executable, "-c", "import time; time.sleep(30)", marker], "sleeping"))
    await _until(True, marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _running(marker)


async def test_a_tool_over_its_timeout_is_killed_and_says_so() -> None:
    marker = f"yun-tool-{uuid.uuid4().hex}"
    with pytest.raises(DriverError, match=r"did not finish within 0\.3s"):
        await run_tool([sys.executable, "-c", "import time; time.sleep(30)", marker], "sleeping", timeout=0.3)
    assert not _running(marker)
