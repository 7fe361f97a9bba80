"""QEMU's dirty-rate sampling as the driver reads it: each read starts the next window."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from yunstack.compute.qemu.driver import DIRTY_WINDOW_S, _dirty_rate
from yunstack.compute.qemu.qmp import QmpSession
from yunstack.errors import DriverError


class Qmp:
    """Answers query-dirty-rate with ``status`` and records the commands."""

    def __init__(self, answer: dict[str, Any], refuse: bool = False) -> None:
        self.answer, self.refuse, self.sent = answer, refuse, []  # type: list[tuple[str, Any]]

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        self.sent.append((command, arguments))
        if self.refuse and command == "calc-dirty-rate":
            raise DriverError(detail="QMP calc-dirty-rate: QEMU refused it (GenericError)")
        return self.answer if command == "query-dirty-rate" else {}


def read(qmp: Qmp) -> int | None:
    return asyncio.run(_dirty_rate(cast(QmpSession, qmp)))


def test_a_measured_window_is_bytes_per_second_and_the_next_window_starts() -> None:
    qmp = Qmp({"status": "measured", "dirty-rate": 12, "calc-time": 1})
    assert read(qmp) == 12 << 20  # QEMU reports MiB/s
    assert qmp.sent[-1] == ("calc-dirty-rate", {"calc-time": DIRTY_WINDOW_S})


def test_never_measured_starts_a_window_and_reports_nothing_yet() -> None:
    qmp = Qmp({"status": "unstarted", "calc-time": 0})
    assert read(qmp) is None
    assert [c for c, _ in qmp.sent] == ["query-dirty-rate", "calc-dirty-rate"]


def test_a_window_still_measuring_is_left_alone() -> None:
    qmp = Qmp({"status": "measuring"})
    assert read(qmp) is None
    assert [c for c, _ in qmp.sent] == ["query-dirty-rate"]


def test_a_qemu_that_refuses_reports_no_rate_and_no_error() -> None:
    assert read(Qmp({"status": "measured", "dirty-rate": 3}, refuse=True)) is None
