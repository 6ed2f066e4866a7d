"""A lab's own task, in the run's image but not in the operator's: the first step reports the task in the run
record, and the operator waits for that before it sizes any evaluation, then scores in the task's direction."""

from __future__ import annotations

from dataclasses import replace

from kubevolve.core.models import Stage
from kubevolve.store import open_store
from kubevolve.testing import RUNS, live_objects
from kubevolve.testing.kubelet import Kubelet
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until

RUN = "own-task"
MINIMIZE_TASK = """\
name: own
description: Minimise f(x, y) = (x - 3)^2 + (y + 1)^2.
metric: f
direction: minimize
stages:
  quick:
    timeoutSeconds: 5
    resources: {memoryMb: 300, maxProcesses: 16, maxFileMb: 4}
checks: {requiredNames: [solve]}
sampler: {kind: greedy, numInspirations: 1}
"""
MINIMIZE_EVALUATOR = """\
from kubevolve.sdk.evaluator_kit import load_program


def evaluate(program_path, stage):
    x, y = load_program(program_path, required=["solve"]).solve()
    return {"f": (x - 3) ** 2 + (y + 1) ** 2}
"""


async def test_the_operator_learns_the_task_from_the_first_step(
    kmock, api, operator, operator_config, tmp_path, store_url
):
    write_task(tmp_path / "own", yaml_text=MINIMIZE_TASK, evaluator=MINIMIZE_EVALUATOR)  # in the "image"
    (tmp_path / "operator-image").mkdir()
    operator.config = replace(operator_config, local_task_root=str(tmp_path / "operator-image"))
    kubelet = Kubelet(api, mode="process", concurrency=2)
    kubelet.start()
    await operator.start()
    try:
        await api.create(RUNS, run_manifest(RUN, "own", budget={"maxCandidates": 3}))
        await until(lambda: run_status(kmock, RUN).get("phase") == "Succeeded", 150, "Succeeded")
    finally:
        await kubelet.stop()

    store = open_store(store_url, tenant=NAMESPACE)
    record = store.get_run(RUN)
    assert record.task_facts["maximize"] is False and record.task_facts["memory_mb"] == 300
    evaluations = [job for name, job in kubelet.bodies.items() if name.startswith(f"{RUN}-eval-")]
    assert evaluations, "no evaluation Job was created"
    for job in evaluations:  # every one sized from the task the step reported, none from defaults
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["memory"] == f"{300 + 768}Mi", limits
    evaluated = [n for n in store.list_nodes(RUN) if n.stage is Stage.EVALUATED]
    lowest = min(n.metrics["f"] for n in evaluated)
    status = run_status(kmock, RUN)
    assert status["bestScore"] == lowest  # in the task's own units and direction
    events = {e["reason"] for e in live_objects(kmock, "v1/events", NAMESPACE)}
    assert "TaskUnreadable" in events
