"""When an agent sends its resource report: its long-poll says it is alive, so a report that says
nothing new waits (at most a minute); anything the scheduler reads goes at once."""

from __future__ import annotations

from dataclasses import replace

from yunstack.agent.agent import REPORT_MEMORY_DRIFT_MIB, REPORT_SECONDS, _report_due
from yunstack.compute.driver import Capabilities, HostInfo

INFO = HostInfo(hostname="h1", vcpus=8, memory_mib=16384, memory_used_mib=2048, local_gb=100, local_gb_used=10,
                hypervisor_type="QEMU", hypervisor_version=7002000, cpu_info="{}", uptime=" 10:00:00 up 1 day",
                accel="tcg", host_ip="10.0.0.1")


def test_the_first_report_and_one_a_minute_old_are_due() -> None:
    assert _report_due(None, INFO, 0.0)
    assert _report_due(INFO, INFO, REPORT_SECONDS)
    assert not _report_due(INFO, INFO, REPORT_SECONDS - 1)


def test_a_new_uptime_line_or_a_small_drift_in_memory_use_is_no_reason() -> None:
    later = replace(INFO, uptime=" 10:01:00 up 1 day",
                    memory_used_mib=INFO.memory_used_mib + REPORT_MEMORY_DRIFT_MIB - 1)
    assert not _report_due(INFO, later, 10.0)


def test_what_the_scheduler_reads_goes_at_once() -> None:
    for changed in (replace(INFO, memory_used_mib=INFO.memory_used_mib + REPORT_MEMORY_DRIFT_MIB),
                    replace(INFO, local_gb_used=11), replace(INFO, vcpus=16), replace(INFO, host_ip="10.0.0.2"),
                    replace(INFO, capabilities=Capabilities(block_migration=True)), replace(INFO, accel="kvm")):
        assert _report_due(INFO, changed, 10.0), changed
