"""How QEMU is started: in its guest's cgroup before exec, so its own memory is charged there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from yunstack.compute.qemu.process import _cgroup_joiner, _preexec


def test_the_child_joins_the_cgroup_before_it_runs_a_single_instruction_of_qemu(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"  # a cgroup's procs file takes the pid written into it
    procs.write_text("")
    done = subprocess.run(["sh", "-c", "echo $$"], preexec_fn=_preexec([_cgroup_joiner(procs)]),
                          capture_output=True, text=True, check=True)
    assert procs.read_text() == done.stdout  # the shell's own pid: written by the child, before exec


def test_a_cgroup_that_cannot_be_joined_does_not_stop_the_start(tmp_path: Path) -> None:
    joiner = _cgroup_joiner(tmp_path / "gone" / "cgroup.procs")
    done = subprocess.run(["true"], preexec_fn=_preexec([joiner]), check=False)
    assert done.returncode == 0


def test_no_preexec_without_steps() -> None:
    assert _preexec([]) is None
