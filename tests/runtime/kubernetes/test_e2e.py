"""End to end against kmock: the real kopf operator, Jobs run with the real step code, a SQLite store file
shared by the proposal and analysis "pods", evaluation pods that are handed their candidate and publish their
result (a judge and a candidate container, as different uids where the kubelet can switch to them), and a
restart of the operator in the middle of the run. The Jobs run as local processes, or (marked `images`,
`make test-images`) as pods in the built worker image."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kubevolve.core.kinds import Role
from kubevolve.core.models import Stage
from kubevolve.runtime.kubernetes import ROLE_LABEL
from kubevolve.runtime.kubernetes.names import job_name, key_of_node, node_id
from kubevolve.runtime.kubernetes.netpol import ISOLATION_POLICY_NAME, evaluation_isolation_policy
from kubevolve.store import open_store
from kubevolve.testing import JOBS, RUNS, live_objects
from kubevolve.testing.kubelet import Kubelet
from kubevolve.testing.netpol import NETWORK_POLICIES, egress_restricted
from kubevolve.testing.pods.runner import PodRunner
from kubevolve.testing.strict import CONTROL_PLANE
from tests.kit.cluster import CLUSTER_ADMIN, LAB_ADMIN, OPERATOR
from tests.kit.images import built_image, derived_image, pod_store, remove_image
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, is_evaluation, run_manifest, run_status, until

CANDIDATES = 5


@pytest.fixture
def operator_config(operator_config, readable_task_root):
    return replace(operator_config, task_root=str(readable_task_root))


def run_jobs(kmock, run: str) -> list[dict]:
    return [
        j for j in live_objects(kmock, JOBS, NAMESPACE) if j["metadata"]["labels"]["kubevolve.io/run"] == run
    ]


async def test_run_succeeds_across_an_operator_restart(kmock, api, operator, operator_config, store_url):
    write_task(Path(operator_config.task_root) / "toy")
    kubelet = Kubelet(api, mode="process", concurrency=2, identities=is_evaluation)
    await run_across_a_restart(kmock, api, operator, kubelet, store_url, run="toy-e2e", task="toy")
    # every evaluation ran in a judge and a candidate container, separate processes (as separate uids where
    # the kubelet could switch), and its result reached the store through the operator, not from the pod
    store = open_store(store_url, tenant=NAMESPACE)
    evaluated = [n for n in store.list_nodes("toy-e2e") if n.stage is Stage.EVALUATED]
    assert evaluated
    for node in evaluated:
        name = job_name("toy-e2e", Role.EVALUATE, key_of_node("toy-e2e", node.id) or "")
        judge, candidate = (kubelet.pod_runs[name].containers[c] for c in ("judge", "candidate"))
        assert judge.exit_code == candidate.exit_code == 0 and judge.pid != candidate.pid
        assert node.id in judge.message and not candidate.message and "--store" not in judge.output
        pod = kubelet.bodies[name]["spec"]["template"]["spec"]
        if kubelet.identified:
            by_name = {c["name"]: c for c in pod["containers"]}
            assert judge.uid == pod["securityContext"]["runAsUser"] == 65532
            assert candidate.uid == by_name["candidate"]["securityContext"]["runAsUser"] != judge.uid
        assert node.metrics["f"] == node.score and node.artifacts["point"]
    assert not live_objects(kmock, "v1/configmaps", NAMESPACE)  # each evaluation's input went with its Job
    # every evaluation Job the operator created: no token, nothing secret in the candidate's container, and the
    # lab's isolation policy selects its pod
    isolation = evaluation_isolation_policy(NAMESPACE)
    created = [b for b in kubelet.bodies.values() if is_evaluation(b)]
    assert len(created) == len(evaluated)
    for body in created:
        template = body["spec"]["template"]
        pod, labels = template["spec"], template["metadata"]["labels"]
        (candidate,) = [c for c in pod["containers"] if c["name"] == "candidate"]
        assert pod["automountServiceAccountToken"] is False and "envFrom" not in candidate
        assert all("valueFrom" not in e for e in candidate["env"])
        assert egress_restricted([isolation], labels)


@pytest.mark.slow
@pytest.mark.images
async def test_run_succeeds_with_every_step_in_its_image(kmock, api, operator, operator_config, tmp_path):
    """The same run with every Job's pod in the worker image (plus the toy task, as a lab's own image adds
    its task), as the kubelet runs it: uid 65532, read-only root, emptyDirs, the lab's NetworkPolicy. The
    operator reads the task from a local copy; the SQLite store is bound into the pods (the stand-in for the
    store they reach over the network). The toy task is judged: each evaluation pod runs the judge and its
    zygote (sandbox "none", as uid 65532), which forks each candidate under the seccomp filter."""
    write_task(tmp_path / "tasks" / "toy")
    assert (tmp_path / "tasks" / "toy" / "run.py").is_file()  # judged, not a legacy evaluator
    image = derived_image(
        built_image("worker"), {tmp_path / "tasks" / "toy": ("/opt/kubevolve/tasks/toy", None)}
    )
    database = pod_store(uid=operator_config.run_as_user)
    store_url = f"sqlite:///{database}"
    operator.config = replace(
        operator_config,
        image=image,
        store_url=store_url,
        task_root="/opt/kubevolve",
        local_task_root=str(tmp_path),
    )
    # the pod runner is the kubelet: it reads Secrets and NetworkPolicies as the control plane
    control_plane = api.as_token(kmock.policy.token_for(CONTROL_PLANE))
    # the lab's NetworkPolicy is there already: the fixture onboarded the lab as `kubevolve lab create` does
    assert await control_plane.get(NETWORK_POLICIES, NAMESPACE, ISOLATION_POLICY_NAME) is not None
    pods = PodRunner(control_plane, host_mounts={str(database.parent): str(database.parent)})
    kubelet = Kubelet(api, mode="image", concurrency=2, pods=pods)
    try:
        await run_across_a_restart(kmock, api, operator, kubelet, store_url, run="toy-img", task="tasks/toy")
    except AssertionError as err:  # say what the pods said
        failed = {n: (r.exit_code, r.output[-1500:]) for n, r in kubelet.pod_results.items() if r.exit_code}
        raise AssertionError(f"{err}; failed pods: {failed or 'none'}; outputs: {kubelet.outputs}") from err
    finally:
        await pods.close()
        await control_plane.close()
        remove_image(image)
        shutil.rmtree(database.parent)

    # every Job's pod ran in the image, as the pods' uid (an evaluation's candidate container as its own);
    # evaluations without network (the lab's isolation policy)
    assert kubelet.pod_results and set(kubelet.pod_results) == set(kubelet.started)
    for name, result in kubelet.pod_results.items():
        role = kubelet.bodies[name]["metadata"]["labels"][ROLE_LABEL]
        uid = result.container("judge" if role == "evaluate" else "step").uid
        assert result.exit_code == 0 and uid == operator_config.run_as_user == 65532, result.output
        assert result.network is (role != "evaluate"), f"{name}: evaluations run without network"
        if role == "evaluate":
            assert result.container("candidate").uid != uid and result.container("judge").message
    roles = {job["metadata"]["labels"][ROLE_LABEL] for job in kubelet.bodies.values()}
    assert roles == {"propose", "evaluate", "analyze"}


async def run_across_a_restart(
    kmock, api, operator, kubelet: Kubelet, store_url: str, *, run: str, task: str
):
    """Run `run` on `task` to its budget with the operator restarted mid-run, then check that it Succeeded
    with nothing lost or run twice."""
    kubelet.start()
    await operator.start()
    spec = {"budget": {"maxCandidates": CANDIDATES}, "parallelism": {"evaluators": 2, "proposers": 2}}
    await api.create(RUNS, run_manifest(run, task, **spec))
    try:
        # the first Job is the initial program's proposal, with the command a real pod would run
        first = await until(lambda: run_jobs(kmock, run), 30, "the first Job")
        command = first[0]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["kubevolve", "step", "propose"] and "--tenant" in command
        # issue 14, defect 7: the step pods run as the lab's step ServiceAccount, with no token
        pod = first[0]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "kubevolve-step" and pod["automountServiceAccountToken"] is False

        await until(
            lambda: run_status(kmock, run).get("candidates", {}).get("evaluated", 0) >= 2,
            120,
            "two evaluated candidates",
        )
        await operator.stop()  # mid-run: Jobs keep running and finishing while no operator watches
        await asyncio.sleep(1.0)
        await operator.start()

        await until(lambda: run_status(kmock, run).get("phase") == "Succeeded", 150, "Succeeded")
        await until(lambda: not run_jobs(kmock, run), 60, "finished Jobs to be cleaned up")
    finally:
        await kubelet.stop()

    status = run_status(kmock, run)
    store = open_store(store_url, tenant=NAMESPACE)
    best = store.best_node(run)
    assert status["bestScore"] == best.metrics["f"] and status["bestNode"] == best.id
    assert status["candidates"]["total"] == CANDIDATES and status["candidates"]["proposed"] == 0
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (
        conditions["Succeeded"]["status"] == "True"
        and conditions["Succeeded"]["reason"] == "MaxCandidatesReached"
    )
    assert store.get_run(run).phase == "Succeeded"

    nodes = store.list_nodes(run)
    assert len(nodes) == CANDIDATES and all(n.stage.is_final for n in nodes)
    # nothing lost or run twice: every Job ran once, every candidate was proposed and evaluated once
    assert operator.starts == 2
    assert set(kubelet.started.values()) == {1}
    for node in nodes:
        assert kubelet.ran[("propose", node.id)] == 1
        if node.stage is Stage.EVALUATED:
            assert kubelet.ran[("evaluate", node.id)] == 1
            assert kubelet.ran[("analyze", node.id)] == 1 and node.insight_id
    assert nodes[0].id == node_id(run, "00000") and not nodes[0].parent_ids
    # the step pods never called the Kubernetes API (they had no token; anonymous calls would be refused)
    assert set(kmock.policy.by_identity) <= {
        OPERATOR.user,
        LAB_ADMIN.user,
        CLUSTER_ADMIN.user,
        CONTROL_PLANE.user,
    }

    # kopf posts events from a queue of its own, after the pass that patched the status: wait for them
    wanted = {"Started", "NewBest", "BudgetReached"}
    await until(
        lambda: wanted <= {e.get("reason") for e in live_objects(kmock, "v1/events", NAMESPACE)},
        10,
        f"the events {sorted(wanted)}",
    )

    # the operator exports the run's metrics from the store, at its totals after the restart (not doubled)
    def metric(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"namespace": NAMESPACE, "run": run, **labels})

    evaluated = [n for n in nodes if n.stage is Stage.EVALUATED]
    await until(
        lambda: metric("kubevolve_candidates_total", outcome="evaluated") == len(evaluated), 15, "metrics"
    )
    assert metric("kubevolve_best_score") == best.score
    for name, step, labels in [("proposal", "propose", {}), ("evaluation", "quick", {"stage": "quick"})]:
        timed = sum(1 for n in nodes if step in n.timings)  # the initial program is not proposed
        assert (
            timed >= CANDIDATES - 1 and metric(f"kubevolve_{name}_duration_seconds_count", **labels) == timed
        )
