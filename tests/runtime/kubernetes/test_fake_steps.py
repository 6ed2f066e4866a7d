"""The test kit's fake pods: a Job's own command line, run in-process through the real steps with stand-in
agents, so that what the operator tests see in the store is what real step pods would write."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevolve.core.kinds import Role
from kubevolve.core.models import RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, step_command
from kubevolve.runtime.kubernetes.names import make_key, node_id
from kubevolve.store import open_store
from kubevolve.testing.fake_steps import FakeSteps
from tests.kit.toy_task import write_task

RUN = RunRef("fake", "lab-a", "uid-1")


@pytest.fixture
def cluster(tmp_path: Path):
    """A task root with the toy task, a store with the run's record, and the operator's config."""
    write_task(tmp_path / "toy")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, tenant=RUN.namespace)
    spec = RunSpec(task="toy", name=RUN.name)
    store.put_run(RunRecord(id=RUN.name, task="toy", spec=spec.to_dict()))
    config = OperatorConfig(image="kubevolve:test", store_url=url, task_root=str(tmp_path))
    yield tmp_path, store, spec, config
    store.close()


def command(spec: RunSpec, config: OperatorConfig, role: Role, index: int) -> list[str]:
    return step_command(RUN, spec, config, JobRequest(role, make_key(index)))


def test_fake_pods_run_the_real_steps_and_score_by_seq(cluster):
    root, store, spec, config = cluster
    fake = FakeSteps()
    try:
        for index in range(4):
            for role in Role:
                fake.run(command(spec, config, role, index), root)
    finally:
        fake.close()
    nodes = store.list_nodes(RUN.name)
    assert [n.id for n in nodes] == [node_id(RUN.name, make_key(i)) for i in range(4)]
    assert all(n.stage is Stage.EVALUATED and n.score == float(n.seq) == n.metrics["f"] for n in nodes)
    assert all(n.insight_id for n in nodes) and len(store.list_insights(RUN.name)) == 4
    seed, *children = nodes
    assert seed.code == load_task(root / "toy").initial_code and seed.proposer == "initial"
    task = load_task(root / "toy")
    for child in children:  # each a new, valid child of the best node so far (the toy samples greedily)
        parent = store.get_node(child.parent_ids[0])
        assert parent.score == max(n.score for n in nodes if n.seq < child.seq)
        assert static_check(task, child.code, parent.code) is None and "scripted proposal" in child.diff
        assert child.timings["quick"] > 0 and child.timings["propose"] >= 0
    assert len({n.code_hash for n in nodes}) == 4
    assert store.get_run(RUN.name).task_facts["metric"] == "f"  # the step reported the task, as a pod does


def test_fake_pods_are_idempotent_and_take_a_score_function(cluster):
    root, store, spec, config = cluster
    fake = FakeSteps(score=lambda node: 10.0 - node.seq)
    try:
        for _ in range(2):  # a Job run twice (a retried pod) changes nothing
            for index in range(2):
                for role in Role:
                    fake.run(command(spec, config, role, index), root)
        with pytest.raises(ValueError, match="unknown step 'train'"):
            fake.run(["kubevolve", "step", "train", "--run", RUN.name], root)
    finally:
        fake.close()
    nodes = store.list_nodes(RUN.name)
    assert [n.score for n in nodes] == [10.0, 9.0] and len(store.list_insights(RUN.name)) == 2
