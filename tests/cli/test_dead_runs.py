"""After `kill -9`, a run's record still says Running: `status` and `runs` tell that its process is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import RunOwner, RunPhase, RunRecord
from kubevolve.store.sqlite import SQLiteStore
from tests.kit.toy_task import TOY_EVALUATOR, write_task

runner = CliRunner()

SLOW_EVALUATOR = "import time\n" + TOY_EVALUATOR.replace(
    "def evaluate(program_path, stage):\n", "def evaluate(program_path, stage):\n    time.sleep(0.2)\n"
)


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _running_record(db, pid: int) -> RunRecord | None:
    if not db.exists():
        return None
    store = SQLiteStore(db)
    try:
        runs = store.list_runs()
        if (
            runs
            and runs[0].owner
            and runs[0].owner.pid == pid
            and sum(store.count_nodes(runs[0].id).values())
        ):
            return runs[0]
        return None
    finally:
        store.close()


def test_status_and_runs_show_a_killed_local_run_as_dead_and_run_resumes_it(tmp_path):
    task = write_task(tmp_path / "slow", evaluator=SLOW_EVALUATOR)
    db = tmp_path / "s.db"
    cli = [sys.executable, "-c", "from kubevolve.cli.app import main; main()"]
    proc = subprocess.Popen(
        [*cli, "run", str(task), "--store", str(db), "--max-candidates", "1000", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        record = _wait_for(lambda: _running_record(db, proc.pid), "the run to commit a node")
        alive = invoke("status", "--store", str(db)).stdout
        assert f"{record.id} (toy): Running\n" in alive and f"process: {proc.pid} on this host" in alive
        assert json.loads(invoke("status", "--store", str(db), "--json").stdout)["dead"] is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    status = invoke("status", "--store", str(db)).stdout
    assert f"Running (dead: process {proc.pid} is gone; `kubevolve run` again resumes it)" in status
    summary = json.loads(invoke("status", "--store", str(db), "--json").stdout)
    assert summary["phase"] == "Running" and summary["dead"] == f"process {proc.pid} is gone"
    assert summary["owner"]["pid"] == proc.pid
    runs = invoke("runs", "--store", str(db)).stdout
    assert f"Running (dead: process {proc.pid} is gone)" in runs

    resumed = json.loads(
        invoke(
            "run", str(task), "--store", str(db), "--max-candidates", str(summary["candidates"] + 2), "--json"
        ).stdout
    )
    assert resumed["id"] == record.id and resumed["phase"] == "Succeeded" and resumed["dead"] is None


def test_a_run_on_another_host_shows_its_heartbeat_and_a_cluster_run_is_not_judged(tmp_path):
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    elsewhere = RunOwner(host="gpu-box-7", pid=1, process_started_at=None, heartbeat_at=time.time() - 125)
    store.put_run(RunRecord(id="far", task="t", spec={}, phase=RunPhase.RUNNING, owner=elsewhere))
    store.put_run(RunRecord(id="cluster", task="t", spec={}, phase=RunPhase.RUNNING, created_at=0.0))
    store.close()
    far = invoke("status", "far", "--store", str(db)).stdout
    assert "far (t): Running\n" in far and "process: 1 on gpu-box-7, heartbeat 2m ago" in far
    cluster = invoke("status", "cluster", "--store", str(db)).stdout
    assert "cluster (t): Running\n" in cluster and "process" not in cluster and "dead" not in cluster
