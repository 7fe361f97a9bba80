"""The operation registry: one declaration per operation, agreeing with the host's steps and the API."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from yunstack.agent.steps import STEPS
from yunstack.api.compute import server_actions
from yunstack.api.compute.servers import NOT_OPERATIONS, REUSES_OPERATIONS
from yunstack.compute import operations
from yunstack.compute import states as st
from yunstack.compute.driver import PowerState
from yunstack.compute.operations import _ALL as DECLARED
from yunstack.compute.operations import REGISTRY, by_action, by_verb, parse_body
from yunstack.db.base import Base
from yunstack.db.engine import make_engine
from yunstack.db.tables import compute as t
from yunstack.db.tables import tasks as tt
from yunstack.errors import BadRequest, Conflict
from yunstack.protocol import (
    ColdMigrationRestoreArgs,
    ColdMigrationSendArgs,
    ConfigDriveData,
    DeleteArgs,
    FlavorData,
    Outcome,
    RebootArgs,
    RebuildArgs,
    ResizeResult,
    SpawnResult,
    SpecData,
    StepArgs,
    Work,
)
from yunstack.types import utcnow
from yunstack.volume import operations as volume_operations

ALL_OPS = {m.model_fields["op"].default for m in get_args(get_args(StepArgs)[0])}
# A volume's steps are the volume service's (volume.operations), not the compute registry's.
VOLUME_OPS = {m.model_fields["op"].default for m in volume_operations.STEPS}
PROTOCOL_OPS = ALL_OPS - VOLUME_OPS

# Nova's /action verbs that start a host operation.
NOVA_VERBS = {"os-stop", "os-start", "reboot", "pause", "unpause", "suspend", "resume", "createImage", "resize",
              "confirmResize", "revertResize", "rebuild", "rescue", "unrescue", "shelve", "shelveOffload",
              "unshelve", "os-migrateLive", "migrate"}

A, S, P, SU, E = st.ACTIVE, st.STOPPED, st.PAUSED, st.SUSPENDED, st.ERROR
# action -> (vm_states, task_states): what nova.compute.api's check_instance_state allows.
EXPECTED_ALLOWED = {
    "stop": ({A, E}, {None}),
    "start": ({S}, {None}),
    "reboot": ({A, S, P, SU, E}, {None, st.REBOOTING}),
    "pause": ({A}, {None}),
    "unpause": ({P}, {None}),
    "suspend": ({A}, {None}),
    "resume": ({SU}, {None}),
    "createImage": ({A, S, P, SU}, {None}),
    "resize": ({A, S}, {None}),
    "confirmResize": ({st.RESIZED}, {None}),
    "revertResize": ({st.RESIZED}, {None}),
    "attach_interface": ({A, S}, {None}),
    "detach_interface": ({A, S}, {None}),
    "rebuild": ({A, S, E}, {None}),
    "rescue": ({A, S, E}, {None}),
    "unrescue": ({st.RESCUED}, {None}),
    "shelve": ({A, S, P, SU}, {None}),
    "shelveOffload": ({st.SHELVED}, {None}),
    "unshelve": ({st.SHELVED, st.SHELVED_OFFLOADED}, {None}),
    "live-migration": ({A, P}, {None}),
    "migrate": ({A, S}, {None}),
}


def test_every_operation_is_declared_once_on_each_side_under_the_protocols_names() -> None:
    names = [op.name for op in DECLARED]
    assert len(names) == len(set(names))
    assert set(REGISTRY) == PROTOCOL_OPS and set(REGISTRY) | VOLUME_OPS == ALL_OPS == set(STEPS)
    assert set(volume_operations.APPLY) == VOLUME_OPS
    for name, decl in REGISTRY.items():
        assert decl.args.model_fields["op"].default == name  # its argument model is its own


def test_every_nova_action_verb_starts_a_registered_operation() -> None:
    for verb in NOVA_VERBS:
        decl = by_verb(verb)
        assert decl is not None, verb
        assert decl.action is not None and by_action(decl.action) is decl
    registered = {op.verb for op in DECLARED if op.verb}
    assert registered == NOVA_VERBS
    # The API's own handlers are either registered operations or verbs that queue no host work.
    assert set(server_actions.HANDLERS) <= registered | NOT_OPERATIONS | REUSES_OPERATIONS
    assert not registered & (NOT_OPERATIONS | REUSES_OPERATIONS)


def test_each_action_is_allowed_from_the_states_nova_allows() -> None:
    for action, (vm_states, tasks) in EXPECTED_ALLOWED.items():
        allowed = by_action(action).allowed
        assert allowed is not None
        assert (set(allowed.vm_states), set(allowed.task_states)) == (vm_states, tasks), action
    # Only the control plane starts these (a create, a delete's own claim).
    assert REGISTRY["spawn"].allowed is None and REGISTRY["delete"].allowed is None


def test_a_disallowed_state_is_a_conflict_in_novas_words() -> None:
    allowed = by_action("pause").allowed
    assert allowed is not None
    with pytest.raises(Conflict, match="Cannot 'pause' instance i-1 while it is in vm_state stopped"):
        allowed.check("pause", "i-1", st.STOPPED, None)
    with pytest.raises(Conflict, match="in task_state rebooting"):
        allowed.check("pause", "i-1", st.ACTIVE, st.REBOOTING)


def _outcome(op: str, power: PowerState, error: str | None = None) -> Outcome:
    return Outcome(instance_id="i", op=op, request_id="r", power_state=int(power), error=error)


@pytest.mark.parametrize("op,power,args,vm_state", [
    ("spawn", PowerState.RUNNING, None, st.ACTIVE),
    ("delete", PowerState.NOSTATE, None, st.DELETED),
    ("stop", PowerState.SHUTDOWN, None, st.STOPPED),
    ("start", PowerState.RUNNING, None, st.ACTIVE),
    ("reboot", PowerState.RUNNING, None, st.ACTIVE),
    ("pause", PowerState.PAUSED, None, st.PAUSED),
    ("unpause", PowerState.RUNNING, None, st.ACTIVE),
    ("suspend", PowerState.SUSPENDED, None, st.SUSPENDED),
    ("resume", PowerState.RUNNING, None, st.ACTIVE),
    ("snapshot", PowerState.PAUSED, None, st.PAUSED),  # as the guest is
    ("snapshot", PowerState.SHUTDOWN, None, st.STOPPED),
    ("resize", PowerState.SHUTDOWN, None, st.RESIZED),
    ("confirm_resize", PowerState.SHUTDOWN, None, st.STOPPED),
    ("revert_resize", PowerState.RUNNING, None, st.ACTIVE),
    ("attach_interface", PowerState.RUNNING, None, st.ACTIVE),
    ("detach_interface", PowerState.SHUTDOWN, None, st.STOPPED),
    ("rebuild", PowerState.RUNNING, RebuildArgs(image_id="x"), st.ACTIVE),
    ("rebuild", PowerState.SHUTDOWN, RebuildArgs(image_id="x", keep_stopped=True), st.STOPPED),
    ("rescue", PowerState.RUNNING, None, st.RESCUED),
    ("unrescue", PowerState.RUNNING, None, st.ACTIVE),
    ("shelve", PowerState.SHUTDOWN, None, st.SHELVED),
    ("shelve_offload", PowerState.SHUTDOWN, None, st.SHELVED_OFFLOADED),
    ("unshelve", PowerState.RUNNING, None, st.ACTIVE),
    # A cold move: the server keeps the state it had (its guest is off while it moves), then waits
    # for its confirm; restore gives it back the state it had before.
    ("cold_migration_send", PowerState.SHUTDOWN, ColdMigrationSendArgs(host="a", migration_id="m", secret="0" * 64,
                                                                       power_on=True), st.ACTIVE),
    ("cold_migration_send", PowerState.SHUTDOWN, ColdMigrationSendArgs(host="a", migration_id="m", secret="0" * 64,
                                                                       power_on=False), st.STOPPED),
    ("cold_migration_finish", PowerState.RUNNING, None, st.RESIZED),
    ("cold_migration_revert", PowerState.NOSTATE, None, st.RESIZED),
    ("cold_migration_restore", PowerState.SHUTDOWN, ColdMigrationRestoreArgs(host="a", migration_id="m",
                                                                             power_on=False), st.STOPPED),
])
def test_the_control_plane_decides_the_vm_state_after_a_successful_step(
        op: str, power: PowerState, args: object, vm_state: str) -> None:
    assert REGISTRY[op].vm_state_after(_outcome(op, power), args) == vm_state


KEEPS_STATE = {"stop", "start", "reboot", "pause", "unpause", "suspend", "resume", "snapshot", "confirm_resize",
               "attach_interface", "detach_interface", "attach_volume", "detach_volume", "extend_volume", "shelve"}
# A migration's failed step starts its rollback: the server is the source's guest, which runs on.
# A cold move's failed send or finish is undone by restore; a failed confirm leaves the server on
# its destination as it is.  A failed revert or restore is an ERROR: the guest may be on neither host.
MIGRATION_STEPS = {op for op in PROTOCOL_OPS if op.startswith("live_migration_")} | {
    "cold_migration_send", "cold_migration_finish", "cold_migration_confirm"}


@pytest.mark.parametrize("op", sorted(PROTOCOL_OPS))
def test_a_failed_step_leaves_the_server_as_its_guest_is_or_in_error(op: str) -> None:
    decl = REGISTRY[op]
    paused = decl.vm_state_after(_outcome(op, PowerState.PAUSED, "boom"), None)
    gone = decl.vm_state_after(_outcome(op, PowerState.NOSTATE, "boom"), None)
    if op in KEEPS_STATE or op in MIGRATION_STEPS:  # as Nova: a failed action is a fault on a server that is as it was
        assert (paused, gone) == (st.PAUSED, st.STOPPED)
    else:
        assert (paused, gone) == (st.ERROR, st.ERROR)


def test_a_hard_reboot_shows_its_own_task() -> None:
    decl = REGISTRY["reboot"]
    assert decl.task_state(RebootArgs(type="HARD")) == st.REBOOTING_HARD
    assert decl.task_state(RebootArgs()) == st.REBOOTING


def test_long_operations_declare_the_steps_they_report() -> None:
    assert REGISTRY["rebuild"].progress == {st.REBUILD_SPAWNING}
    assert REGISTRY["shelve"].progress == {st.SHELVING_IMAGE_PENDING_UPLOAD, st.SHELVING_IMAGE_UPLOADING}
    assert REGISTRY["unshelve"].progress == {st.SPAWNING}
    assert REGISTRY["stop"].progress == frozenset()


def test_action_bodies_are_checked_by_each_operations_model() -> None:
    reboot = REGISTRY["reboot"]
    assert parse_body(reboot, {"type": "hard"}).model_dump() == {"type": "HARD"}
    with pytest.raises(BadRequest, match="reboot needs"):
        parse_body(reboot, {"type": "SOFT", "force": True})
    with pytest.raises(BadRequest, match="takes no arguments"):
        parse_body(REGISTRY["pause"], {"now": True})
    assert parse_body(REGISTRY["pause"], None) == parse_body(REGISTRY["pause"], {})
    with pytest.raises(BadRequest, match="non-empty 'name'"):
        parse_body(REGISTRY["snapshot"], {"name": "  "})
    with pytest.raises(BadRequest, match="'metadata' must be an object of strings"):
        parse_body(REGISTRY["snapshot"], {"name": "s", "metadata": {"k": 1}})
    with pytest.raises(BadRequest, match="is not of type 'null'"):
        parse_body(REGISTRY["shelve_offload"], {"x": 1})
    assert parse_body(REGISTRY["resize"], {"flavorRef": 2, "OS-DCF:diskConfig": "AUTO"}).model_dump()["flavorRef"] == 2


ADAPTER: TypeAdapter[StepArgs] = TypeAdapter(StepArgs)
FLAVOR = FlavorData(id="f", name="m1", ram=512, vcpus=1, disk=1, extra_specs={"hw:x": "y"})
SAMPLES = [{"op": "spawn"}, {"op": "delete"}, {"op": "reboot", "type": "HARD"}, {"op": "snapshot", "image_id": "i"},
           {"op": "resize", "flavor": FLAVOR.model_dump()}, {"op": "revert_resize", "old_flavor": None},
           {"op": "attach_interface", "port_id": "p"}, {"op": "detach_interface", "port_id": "p", "mac": "m"},
           {"op": "rebuild", "image_id": "i", "keep_stopped": True}, {"op": "rescue", "image_id": "i"},
           {"op": "shelve", "image_id": "i", "offload": False}, {"op": "unshelve", "image_id": None},
           {"op": "live_migration_prepare", "host": "b", "migration_id": "m"},
           {"op": "live_migration_send", "host": "a", "migration_id": "m", "uri": "tcp:h:1", "disks_uri": "nbd://h:2"},
           {"op": "live_migration_abort", "host": "a", "migration_id": "m", "side": "source"}]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: str(s["op"]))
def test_work_for_every_operation_survives_a_json_round_trip(sample: dict[str, object]) -> None:
    work = Work(instance_id="i", request_id="req-1", args=ADAPTER.validate_python(sample))
    again = Work.model_validate_json(work.model_dump_json())
    assert again == work and type(again.args) is type(work.args) and again.op == sample["op"]


def test_outcomes_and_specs_survive_a_json_round_trip() -> None:
    for result in (None, SpawnResult(adopted=True), ResizeResult(was_running=False)):
        outcome = Outcome(instance_id="i", op="resize", request_id="r", power_state=4, error=None, result=result)
        assert Outcome.model_validate_json(outcome.model_dump_json()) == outcome
    spec = SpecData(id="i", name="n", hostname="h", vcpus=1, memory_mib=64, disk_gib=1, image_id="img",
                    config_drive=ConfigDriveData(meta_data={"meta": {"a": "b"}, "devices": []},
                                                 user_data=b"\x00\xff#!", network_data={"links": []}),
                    extra={"k": "v"}, port_ids=("p1", "p2"))
    assert SpecData.model_validate_json(spec.model_dump_json()) == spec
    assert "vm_state" not in Outcome.model_fields  # the host never decides it


def test_queued_work_reads_back_as_its_typed_arguments_and_a_newer_step_supersedes_a_queued_one(
        tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    Base.metadata.create_all(engine)
    db = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with db.begin() as s:
            row = t.Instance(id="i-1", name="vm", hostname="vm", project_id="p", user_id="u", host="h1", flavor={},
                             vm_state="active", availability_zone="nova",
                             created_at=utcnow(), updated_at=utcnow())
            s.add(row)
            s.flush()
            assert operations.queue_step(s, row, RebuildArgs(image_id="i"), "req-9", task="rebuilding")
        with db.begin() as s:
            row = s.get(t.Instance, "i-1")
            step = operations.queued(row)
            assert step is not None and step.request_id == "req-9" and step.args == RebuildArgs(image_id="i")
            assert step.host == "h1" and not step.running and row.task_state == "rebuilding"
            operations.queue_step(s, row, DeleteArgs(), "req-10", task="deleting")
        with db() as s:
            row = s.get(t.Instance, "i-1")
            step = operations.queued(row)
            assert step is not None and step.op == "delete" and step.request_id == "req-10"
            # the rebuild no host had started is superseded, and says by what
            kinds = {r.kind: (r.state, r.reason) for r in s.scalars(select(tt.Task))}
            assert kinds["server.rebuild"] == ("cancelled", "superseded by delete (request req-10)")
            assert kinds["server.delete"] == ("queued", None)
    finally:
        engine.dispose()
