"""Who runs a local run: recorded with the run, renewed by a heartbeat, judged by readers on the same host."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time

import pytest

import kubevolve
from kubevolve.core import liveness
from kubevolve.core.models import RunOwner, RunPhase, RunRecord
from kubevolve.runtime import owner
from kubevolve.store.codec import run_from_json, run_to_json
from kubevolve.store.sqlite import SQLiteStore


def running(who: RunOwner | None) -> RunRecord:
    return RunRecord(id="r", task="t", spec={}, phase=RunPhase.RUNNING, owner=who)


def test_this_process_is_alive_and_its_start_time_is_known():
    me = liveness.this_process()
    assert me.pid == os.getpid() and me.heartbeat_at <= time.time()
    assert me.process_started_at is not None and me.process_started_at <= time.time()
    assert liveness.why_gone(me) is None and liveness.dead_reason(running(me)) is None


def test_a_process_that_exited_is_gone():
    proc = subprocess.Popen(["true"])
    proc.wait()
    gone = dataclasses.replace(liveness.this_process(), pid=proc.pid, process_started_at=None)
    assert liveness.dead_reason(running(gone)) == f"process {proc.pid} is gone"


def test_a_killed_process_not_yet_reaped_is_gone():
    proc = subprocess.Popen(["sleep", "30"])
    started = liveness.process_start_time(proc.pid)
    proc.kill()
    deadline = time.monotonic() + 5
    while (liveness._proc_stat(proc.pid) or ["?"])[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        zombie = dataclasses.replace(liveness.this_process(), pid=proc.pid, process_started_at=started)
        assert liveness.why_gone(zombie) == f"process {proc.pid} is gone"
    finally:
        proc.wait()


def test_a_pid_now_used_by_another_process_is_gone():
    me = liveness.this_process()
    assert me.process_started_at is not None
    reused = dataclasses.replace(me, process_started_at=me.process_started_at - 3600)
    assert "another process" in (liveness.why_gone(reused) or "")


def test_runs_on_another_host_on_a_cluster_or_not_running_are_not_judged():
    proc = subprocess.Popen(["true"])
    proc.wait()
    gone = dataclasses.replace(liveness.this_process(), pid=proc.pid)
    assert liveness.dead_reason(running(dataclasses.replace(gone, host="another-host"))) is None
    assert liveness.dead_reason(running(None)) is None  # the operator wrote it: no owner
    stopped = running(gone)
    stopped.phase = RunPhase.STOPPED
    assert liveness.dead_reason(stopped) is None


def test_the_owner_round_trips_and_old_or_odd_records_stay_readable(tmp_path):
    record = running(liveness.this_process())
    assert run_from_json(run_to_json(record)) == record
    store = SQLiteStore(tmp_path / "s.db")
    store.put_run(record)
    assert store.get_run("r") == record
    store.close()
    old = json.loads(run_to_json(record))
    del old["owner"]  # written before owners existed
    assert run_from_json(json.dumps(old)).owner is None
    odd_owners = (
        "pid 12",
        {"pid": 12},
        {"host": "h", "pid": "12", "process_started_at": None, "heartbeat_at": 1.0},
        {"host": "h", "pid": 1, "process_started_at": "then", "heartbeat_at": 1.0},
    )
    for odd in odd_owners:  # hand-edited or damaged: read as no owner, never as a wrong one
        old["owner"] = odd
        assert run_from_json(json.dumps(old)).owner is None
    old["owner"] = {"host": "h", "pid": 1, "process_started_at": None, "heartbeat_at": 1.0, "newer_field": 2}
    assert run_from_json(json.dumps(old)).owner == RunOwner("h", 1, None, 1.0)  # a newer kubevolve's field


async def test_the_heartbeat_is_renewed_in_the_store(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    record = running(liveness.this_process())
    record.owner.heartbeat_at = 0.0
    store.put_run(record)
    beating = asyncio.create_task(owner.keep_alive(store, record, interval=0.01))
    try:
        deadline = time.monotonic() + 5
        while store.get_run("r").owner.heartbeat_at == 0.0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert store.get_run("r").owner.heartbeat_at > time.time() - 5
    finally:
        beating.cancel()
        store.close()


def test_a_local_run_records_its_owner(toy_task, tmp_path):
    during: list[RunOwner | None] = []
    store = SQLiteStore(tmp_path / "s.db")

    def on_progress(progress, node):
        if node is not None and not during:
            during.append(store.get_run(progress.run_id).owner)

    result = kubevolve.evolve(toy_task, store=store, max_candidates=3, on_progress=on_progress)
    after = store.get_run(result.id).owner
    store.close()
    for who in (during[0], after):
        assert who is not None and who.pid == os.getpid() and who.host == liveness.this_process().host
        assert who.process_started_at == pytest.approx(liveness.process_start_time(os.getpid()), abs=2)


def test_a_run_that_a_live_process_runs_is_not_resumed_by_a_second_one(store, toy_task):
    """Two processes committing into one run would overwrite each other: the second `kubevolve run` refuses."""
    from kubevolve.core.spec import RunSpec, SpecError
    from kubevolve.core.task import load_task
    from kubevolve.runtime.targets import choose_run_id

    spec = RunSpec(task=str(toy_task), name="busy")
    task = load_task(spec.task)
    record = RunRecord(id="busy", task=task.name, spec=spec.to_dict(), phase=RunPhase.RUNNING)
    owner.claim(record)  # this test's process: alive
    store.put_run(record)
    with pytest.raises(SpecError, match=r"run 'busy' is being run by process \d+"):
        choose_run_id(spec, task, store, new=False)
    unnamed = RunSpec(task=str(toy_task))
    with pytest.raises(SpecError, match="is being run by"):
        choose_run_id(unnamed, task, store, new=False)
    assert choose_run_id(unnamed, task, store, new=True)[1] is False  # --new starts another run

    proc = subprocess.Popen(["true"])
    proc.wait()
    assert record.owner is not None
    record.owner = dataclasses.replace(record.owner, pid=proc.pid, process_started_at=None)
    store.put_run(record)  # its process is gone (kill -9): resumable
    assert choose_run_id(spec, task, store, new=False) == ("busy", True)

    record.owner = dataclasses.replace(record.owner, host="elsewhere", heartbeat_at=time.time())
    store.put_run(record)  # another host, a fresh heartbeat: may be alive
    with pytest.raises(SpecError, match="on elsewhere"):
        choose_run_id(spec, task, store, new=False)
    record.owner = dataclasses.replace(
        record.owner, heartbeat_at=time.time() - 4 * liveness.HEARTBEAT_SECONDS
    )
    store.put_run(record)  # a stale heartbeat from another host: presumed dead
    assert choose_run_id(spec, task, store, new=False) == ("busy", True)
