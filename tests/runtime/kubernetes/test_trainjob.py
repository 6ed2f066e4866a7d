"""A multi-node evaluation (a Kubeflow Trainer TrainJob) is an evaluation pod like a Job's: its launcher's judge
publishes the result for the operator, no pod holds a store key or has a route to the store, and only the
TrainJob's own pods reach each other (issue 14). The pods are judged as Trainer v2.3.0 makes them from the
TrainJob and the run's TrainingRuntime (kubevolve.testing.trainer), end to end on the strict kmock."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.core.models import Stage
from kubevolve.core.spec import parse_run_spec
from kubevolve.loop.engineer import zygote
from kubevolve.loop.evaluation_io import EvaluationResult
from kubevolve.runtime.kubernetes import MPI_JOB_LABEL, ROLE_LABEL, TRAINJOB_LABEL
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.handover import seed_secret_name
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, candidate_uid
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.netpol import evaluation_isolation_policy, trainjob_peer_policy
from kubevolve.runtime.kubernetes.observe import JobInfo
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.results import published_result
from kubevolve.runtime.kubernetes.trainjob import build_runtime, build_trainjob
from kubevolve.store import open_store
from kubevolve.testing import RUNS, TRAINJOBS, live_objects
from kubevolve.testing.kubelet import Kubelet
from kubevolve.testing.label_selector import selects
from kubevolve.testing.netpol import egress_rules
from kubevolve.testing.trainer import TrainJobRefused, jobset_pods
from tests.kit.cluster import OPERATOR
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, run_to_success, until
from tests.runtime.kubernetes.test_evaluation_pod import evaluated

RUN = RunRef("packing-1", "lab-a", "uid-123")
CONFIG = OperatorConfig(
    image="registry.lab/kubevolve:1", store_url="weaviate://weaviate.kv:8080", lab_keys=True
)
JUDGED = TaskFacts(name="linear_attention", metric="acc", cpu=8, memory_mb=65536, gpus=2, judged=True)
# every Secret a lab admin can name in a run: none may reach a TrainJob's pods
SPEC = parse_run_spec(
    {
        "task": "tasks/x",
        "jobs": {"evaluate": {"gpus": 2, "trainJob": {"numNodes": 3}}},
        "store": {"apiKeySecret": {"name": "store-key"}},
        "llm": {"apiKeySecret": {"name": "llm-key"}},
    }
)
SSH_SECRET = "mpi-ssh-auth"


REQ = JobRequest("evaluate", "00004", 1)


def pods(req: JobRequest = REQ) -> tuple[dict[str, Any], dict[str, dict]]:
    """The TrainJob, and its launcher's and node pods' templates as Trainer makes them."""
    trainjob = build_trainjob(RUN, SPEC, CONFIG, JUDGED, req)
    made = jobset_pods(trainjob, build_runtime(RUN, SPEC, CONFIG, JUDGED))
    return trainjob, {name: template for name, (_count, template) in made.pods.items()}


def secret_refs(container: dict[str, Any], pod: dict[str, Any]) -> set[str]:
    """Every Secret (and token) the container can read: env, envFrom, mounted or projected volumes."""
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }
    refs |= {f"envFrom {e['secretRef']['name']}" for e in container.get("envFrom") or [] if "secretRef" in e}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            refs.add(f"volume {mount['name']}")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source or "serviceAccountToken" in source:
                refs.add(f"projected {mount['name']}")
    return refs


def test_no_trainjob_pod_holds_a_store_key_and_only_the_judge_has_the_seed():
    trainjob, templates = pods()
    assert set(templates) == {"launcher", "node"}
    seed = seed_secret_name(RUN.name)
    held = {}
    for name, template in templates.items():
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        for c in pod["containers"]:
            held[(name, c["name"])] = secret_refs(c, pod)
            assert not {e["name"] for e in c.get("env") or []} & {"KUBEVOLVE_STORE_API_KEY", "OPENAI_API_KEY"}
    assert held == {
        ("launcher", "node"): {seed, f"volume {SSH_SECRET}"},  # the judge (Trainer mounts the key in `node`)
        ("launcher", "candidate"): {f"volume {SSH_SECRET}"},  # mpirun's key to the node pods, nothing else
        ("node", "node"): {f"volume {SSH_SECRET}"},  # sshd's
    }
    launcher = {c["name"]: c for c in templates["launcher"]["spec"]["containers"]}
    judge, candidate = launcher["node"], launcher["candidate"]
    # the judge runs the judge's step (not the store's), publishing its result; the candidate runs the zygote
    command = parse_step_command(judge["command"])
    assert (
        command.input_file is not None and command.termination_log is not None and command.store_url is None
    )
    assert judge["command"] == trainjob["spec"]["trainer"]["command"]
    assert str(command.candidate_socket) in candidate["command"]
    assert judge["terminationMessagePolicy"] == "File"
    # they share the sandbox; the candidate has the hostfile to start the ranks, not the judge's input
    mounts = {c: {m["name"] for m in launcher[c]["volumeMounts"]} for c in launcher}
    assert mounts["candidate"] == {"sandbox", "dshm", SSH_SECRET, "mpi-hostfile"}
    assert {"sandbox", "input"} <= mounts["node"]
    # the GPUs are the candidate's and the node pods', not the judge's
    assert "nvidia.com/gpu" not in judge["resources"]["limits"]
    assert candidate["resources"]["limits"]["nvidia.com/gpu"] == "2"
    (node,) = templates["node"]["spec"]["containers"]
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "2" and node["command"][0] == "/usr/sbin/sshd"
    assert {"name": "KUBEVOLVE_NUM_NODES", "value": "3"} in candidate["env"]


def test_the_launchers_candidate_runs_as_a_uid_of_its_own_with_a_passwd_entry_for_ssh():
    """As in an evaluation Job's pod: the candidate is not its judge's uid (it could signal the judge, read its
    files), and each TrainJob's candidate has its own (jobs.candidate_uid). ssh, which mpirun starts the ranks
    with, exits without a passwd entry for its uid: nss_wrapper gives it one, from files the zygote writes in
    the candidate's sandbox; the node pods run sshd as the image's user, whom the candidate logs in as."""
    uids = {}
    for req in (REQ, JobRequest("evaluate", "00005")):
        trainjob, templates = pods(req)
        pod = templates["launcher"]["spec"]
        launcher = {c["name"]: c for c in pod["containers"]}
        judge, candidate = launcher["node"], launcher["candidate"]
        uid = candidate["securityContext"]["runAsUser"]
        assert (
            uid
            == candidate["securityContext"]["runAsGroup"]
            == candidate_uid(CONFIG, trainjob["metadata"]["name"])
        )
        assert (
            uid != CONFIG.run_as_user and judge["securityContext"].get("runAsUser", CONFIG.run_as_user) != uid
        )
        assert pod["securityContext"]["runAsUser"] == CONFIG.run_as_user  # the judge's, and sshd's below
        (node,) = templates["node"]["spec"]["containers"]
        assert node["securityContext"].get("runAsUser") is None
        assert templates["node"]["spec"]["securityContext"]["runAsUser"] == CONFIG.run_as_user
        env = {e["name"]: e.get("value") for e in candidate["env"]}
        assert env["LD_PRELOAD"] == "libnss_wrapper.so"
        sandbox = next(m["mountPath"] for m in candidate["volumeMounts"] if m["name"] == "sandbox")
        for name in ("NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP"):  # in its writable volume, not the judge's
            assert env[name].startswith(sandbox + "/")
        assert not {"LD_PRELOAD", "NSS_WRAPPER_PASSWD"} & {e["name"] for e in judge["env"]}
        uids[req.key] = uid
    assert len(set(uids.values())) == 2  # one per TrainJob, though they share the run's runtime


def test_the_zygote_writes_the_candidates_passwd_entry_before_it_connects(tmp_path, monkeypatch):
    """With the environment the operator sets (here in a folder of the test's): the image's entries and one for
    the zygote's uid, written before it connects to the judge, that is before any candidate exists."""
    _, templates = pods()
    launcher = {c["name"]: c for c in templates["launcher"]["spec"]["containers"]}
    env = {e["name"]: e["value"] for e in launcher["candidate"]["env"] if "value" in e}
    for name in ("NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP"):
        monkeypatch.setenv(name, str(tmp_path / env[name].lstrip("/")))
    monkeypatch.setenv("HOME", "/sandbox")

    def refused(path: str) -> None:
        assert (tmp_path / env["NSS_WRAPPER_PASSWD"].lstrip("/")).exists()
        raise OSError("no judge")

    monkeypatch.setattr(zygote, "connect", refused)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        assert zygote.main(["zygote", "--connect", "/nowhere"]) == 1
    finally:
        signal.signal(signal.SIGINT, sigint)
    passwd = (tmp_path / env["NSS_WRAPPER_PASSWD"].lstrip("/")).read_text().splitlines()
    group = (tmp_path / env["NSS_WRAPPER_GROUP"].lstrip("/")).read_text().splitlines()
    uid, gid = os.getuid(), os.getgid()
    mine = [line for line in passwd if line.split(":")[2] == str(uid)]
    assert len(mine) == 1 and [line for line in group if line.split(":")[2] == str(gid)]
    assert (
        passwd[: len(Path("/etc/passwd").read_text().splitlines())]
        == Path("/etc/passwd").read_text().splitlines()
    )
    if not [line for line in Path("/etc/passwd").read_text().splitlines() if line.split(":")[2] == str(uid)]:
        assert mine == [f"candidate:x:{uid}:{gid}:kubevolve candidate:/sandbox:/bin/sh"]
    # without the operator's environment (an evaluation Job's candidate) nothing is written
    monkeypatch.delenv("NSS_WRAPPER_GROUP")
    (tmp_path / env["NSS_WRAPPER_PASSWD"].lstrip("/")).unlink()
    zygote.write_identity()
    assert not (tmp_path / env["NSS_WRAPPER_PASSWD"].lstrip("/")).exists()


def test_every_trainjob_pod_is_isolated_and_its_peer_policy_lets_only_its_pods_meet():
    """The isolation policy selects every pod of the TrainJob (nothing by default, even before the peer
    policy exists); the peer policy adds the TrainJob's own pods and DNS, and nothing reaches the store."""
    trainjob, templates = pods()
    name = trainjob["metadata"]["name"]
    peers = trainjob_peer_policy(NAMESPACE, name, "tj-uid")
    assert peers["metadata"]["ownerReferences"] == [
        {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": name, "uid": "tj-uid"}
    ]
    _, other = pods(JobRequest("evaluate", "00005"))
    base = [evaluation_isolation_policy(NAMESPACE)]
    for template in templates.values():
        labels = template["metadata"]["labels"]
        assert labels[ROLE_LABEL] == "evaluate" and egress_rules(base, NAMESPACE, labels) == []
        rules = egress_rules([*base, peers], NAMESPACE, labels)
        assert rules == peers["spec"]["egress"]
        assert selects(peers["spec"]["podSelector"], labels)
    (to_peers, dns) = peers["spec"]["egress"]
    (from_peers,) = peers["spec"]["ingress"]
    for rule in (to_peers["to"], from_peers["from"]):
        (peer,) = rule
        assert set(peer) == {"podSelector"}  # this namespace only
        assert all(selects(peer["podSelector"], t["metadata"]["labels"]) for t in templates.values())
        assert not any(selects(peer["podSelector"], t["metadata"]["labels"]) for t in other.values())
    assert "ports" not in to_peers  # ssh, the rendezvous and the collectives: any port
    assert {p["port"] for p in dns["ports"]} == {53}  # the hostfile names JobSet's DNS names
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def _reaches(rule: dict, namespace: str, pod_labels: dict, source_namespace: str = NAMESPACE) -> bool:
    """Whether an egress rule's `to` admits a pod with `pod_labels` in `namespace` (the NetworkPolicy API: a
    peer without namespaceSelector means the policy's own namespace)."""
    for peer in rule.get("to") or []:
        spaces = peer.get("namespaceSelector")
        in_space = (
            namespace == source_namespace
            if spaces is None
            else selects(spaces, {"kubernetes.io/metadata.name": namespace})
        )
        if in_space and selects(peer.get("podSelector") or {}, pod_labels):
            return True
    return False


def test_the_dns_a_trainjobs_pods_may_reach_is_the_clusters_not_a_pod_another_lab_labels_so():
    """Any lab admin may label a pod of their own `k8s-app: kube-dns` and listen on TCP 53: were the DNS rule
    open to every namespace, a candidate's ranks would have a full TCP route to another tenant's pod. Only
    kube-system's DNS pods are the cluster's."""
    _, dns = trainjob_peer_policy(NAMESPACE, "tj", "tj-uid")["spec"]["egress"]
    assert _reaches(dns, "kube-system", {"k8s-app": "kube-dns"})
    assert not _reaches(dns, "lab-b", {"k8s-app": "kube-dns"})
    assert not _reaches(dns, NAMESPACE, {"k8s-app": "kube-dns"})


def test_the_patch_is_one_trainers_webhook_accepts_and_an_admins_runtime_gets_no_candidate():
    """Trainer refuses a patch that names a container the runtime lacks or sets a `node` container's env: the
    patch adds the candidate's nothing, so it fits a cluster admin's runtime with `launcher` and `node` too."""
    admins = parse_run_spec(
        {"task": "tasks/x", "jobs": {"evaluate": {"trainJob": {"runtime": "site", "numNodes": 2}}}}
    )
    legacy = replace(JUDGED, judged=False)
    trainjob = build_trainjob(RUN, admins, CONFIG, legacy, JobRequest("evaluate", "00001"))
    site = build_runtime(RUN, admins, CONFIG, legacy)  # an MPI runtime with `launcher` and `node` only
    made = jobset_pods(trainjob, site)
    (judge,) = made.pods["launcher"][1]["spec"]["containers"]
    assert "input" in {m["name"] for m in judge["volumeMounts"]}
    bad = build_trainjob(RUN, SPEC, CONFIG, JUDGED, JobRequest("evaluate", "00001"))
    patch = bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][1]
    patch["template"]["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    with pytest.raises(TrainJobRefused, match="doesn't exist"):
        jobset_pods(bad, build_runtime(RUN, SPEC, CONFIG, JUDGED))


# ---- end to end ----------------------------------------------------------------------------------------


@pytest.fixture
def operator_config(operator_config, readable_task_root):
    return dataclasses.replace(operator_config, task_root=str(readable_task_root))


TRAINJOB = {"trainJob": {"numNodes": 2}}


async def test_a_trainjobs_judge_publishes_and_the_operator_stores_the_result(
    kmock, api, operator, operator_config, store_url
):
    """On the strict kmock (every request the operator makes authorised by the chart's RBAC, every object
    validated against Trainer's CRDs): the launcher pod runs the judge and the candidate in containers of
    their own, as their users (as root), and has no store to write to; the operator reads the judge's result
    from the launcher pod and stores it, and makes the TrainJob's peer policy, owned by the TrainJob."""
    write_task(Path(operator_config.task_root) / "toy")
    manifest = run_manifest("mn", "toy", budget={"maxCandidates": 2}, jobs={"evaluate": TRAINJOB})
    kubelet = await run_to_success(kmock, api, operator, manifest, 90)

    store = open_store(store_url, tenant=NAMESPACE)
    seed = store.get_node("mn-c00000")
    assert seed.stage is Stage.EVALUATED and seed.score == -((0.5 - 3) ** 2) - (0.5 + 1) ** 2
    trainjobs = {  # as created (the operator deletes them once their results are stored)
        name: obj.history[0] for (res, ns, name), obj in kmock.objects.items() if res.plural == "trainjobs"
    }
    assert set(trainjobs) == {"mn-eval-00000", "mn-eval-00001"}
    launcher = kubelet.pod_runs["mn-eval-00000"]
    assert set(launcher.containers) == {"node", "candidate"}  # the judge, the candidate
    assert all(c.exit_code == 0 for c in launcher.containers.values())
    command = kubelet.bodies["mn-eval-00000"]["spec"]["trainer"]["command"]
    assert "--store" not in command and "--termination-log" in command
    # the operator read the launcher's judge, nothing of a node pod's
    logs = [
        r for r in kmock if r.resource is not None and r.resource.plural == "pods" and r.subresource == "log"
    ]
    assert logs and {r.params.get("container") for r in logs} == {"node"}
    assert all("-launcher-" in (r.name or "") for r in logs)
    policies = {
        p["metadata"]["name"]: p
        for p in live_objects(kmock, "networking.k8s.io/v1/networkpolicies", NAMESPACE)
        if p["metadata"]["name"].endswith("-peers")
    }
    assert set(policies) == {f"{n}-peers" for n in trainjobs}
    for name, trainjob in trainjobs.items():
        (owner,) = policies[f"{name}-peers"]["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("TrainJob", name, trainjob["metadata"]["uid"])
    if kubelet.identified:  # the judge as the image's user, the candidate as its own: neither opens the store
        uids = {name: c.uid for name, c in launcher.containers.items()}
        assert uids == {
            "node": operator_config.run_as_user,
            "candidate": candidate_uid(operator_config, "mn-eval-00000"),
        }


async def test_a_peer_policy_lost_after_its_trainjob_was_created_is_made_by_a_later_pass(
    kmock, api, operator, operator_config, monkeypatch
):
    """The operator creates a TrainJob, then its peer policy: a pass that ends between the two (a crash, a
    restart, an API error on the policy) leaves a TrainJob that later passes see as running and never create
    again. Without its policy its pods stay isolated, the ranks never meet, and the evaluation holds its nodes
    until its deadline (hours for a GPU stage); a later pass must make the policy of every running TrainJob."""
    write_task(Path(operator_config.task_root) / "toy")
    create, failed = Kube.create, []

    async def first_policy_fails(self: Kube, body: dict[str, Any]) -> bool:
        if body["kind"] == "NetworkPolicy" and not failed:
            failed.append(body["metadata"]["name"])
            raise ApiException(status=503, reason="the API server went away")
        return await create(self, body)

    monkeypatch.setattr(Kube, "create", first_policy_fails)
    kubelet = Kubelet(api, mode="fake", kueue=True)  # the TrainJob waits, as for a busy queue, until admitted
    kubelet.start()
    await operator.start()
    jobs = {"evaluate": TRAINJOB}
    manifest = run_manifest("lost", "toy", queueName="lab-a-gpus", budget={"maxCandidates": 1}, jobs=jobs)
    await api.create(RUNS, manifest)
    kubelet.admit(1)  # the initial program's proposal

    def peer_policies() -> dict[str, str]:
        return {
            p["metadata"]["name"]: p["metadata"]["ownerReferences"][0]["uid"]
            for p in live_objects(kmock, "networking.k8s.io/v1/networkpolicies", NAMESPACE)
            if p["metadata"]["name"].endswith("-peers")
        }

    try:
        await until(lambda: failed, 30, "the TrainJob's first pass")
        await until(peer_policies, 20, "its peer policy, made by a later pass")
        kubelet.admit()
        await until(lambda: run_status(kmock, "lost").get("phase") == "Succeeded", 60, "Succeeded")
    finally:
        await kubelet.stop()
    assert failed == ["lost-eval-00000-peers"]
    (uid,) = [
        o.history[0]["metadata"]["uid"] for (r, _, _), o in kmock.objects.items() if r.plural == "trainjobs"
    ]
    assert peer_policies() == {"lost-eval-00000-peers": uid}


async def test_a_failed_trainjob_is_retried_and_then_recorded_as_a_failed_candidate(
    kmock, api, operator, operator_config, store_url
):
    write_task(Path(operator_config.task_root) / "toy")

    def fail(job: dict) -> str | None:  # Trainer copies the JobSet's Failed condition, e.g. past its deadline
        return (
            "DeadlineExceeded" if job["kind"] == "TrainJob" and "00001" in job["metadata"]["name"] else None
        )

    kubelet = Kubelet(api, mode="fake", concurrency=4, fail=fail)
    kubelet.start()
    await operator.start()
    spec = {"budget": {"maxCandidates": 2}, "failurePolicy": {"maxAttempts": 2, "backoffSeconds": 0.3}}
    await api.create(RUNS, run_manifest("mnf", "toy", jobs={"evaluate": TRAINJOB}, **spec))
    try:
        await until(lambda: run_status(kmock, "mnf").get("phase") == "Succeeded", 60, "Succeeded")
    finally:
        await kubelet.stop()
    assert kubelet.started["mnf-eval-00001"] == 1 and kubelet.started["mnf-eval-00001-a1"] == 1
    node = open_store(store_url, tenant=NAMESPACE).get_node("mnf-c00001")
    assert (
        node.stage is Stage.FAILED_QUICK
        and "failed 2 times" in node.error
        and "DeadlineExceeded" in node.error
    )


async def test_a_judged_task_on_an_admins_runtime_is_refused(kmock, api, operator, operator_config):
    write_task(Path(operator_config.task_root) / "toy")  # judged: a runner and a judge
    await operator.start()
    evaluate = {"trainJob": {"numNodes": 2, "runtime": "site-mpi"}}
    await api.create(RUNS, run_manifest("site", "toy", jobs={"evaluate": evaluate}))
    await until(lambda: run_status(kmock, "site").get("phase") == "Failed", 30, "Failed")
    status = run_status(kmock, "site")
    assert "spec.jobs.evaluate.trainJob.runtime" in status["message"] and "site-mpi" in status["message"]
    assert not live_objects(kmock, TRAINJOBS, NAMESPACE)


async def test_a_trainjob_an_earlier_pass_created_gives_its_uid_for_the_peer_policy(kmock, api):
    """A pass that finds its TrainJob already there (created before a restart) still owns the peer policy
    by the TrainJob's uid: it reads it back (the chart grants `get` on trainjobs for this)."""
    kube = Kube.for_server(str(kmock.url), kmock.policy.token_for(OPERATOR))
    try:
        body = build_trainjob(RunRef("again", NAMESPACE, "u"), SPEC, CONFIG, JUDGED, REQ)
        first, created = await kube.create_trainjob(copy.deepcopy(body))
        again, created_again = await kube.create_trainjob(copy.deepcopy(body))
    finally:
        kube.close()
    assert created and not created_again and first == again and first


async def test_a_result_a_node_pod_publishes_is_never_read():
    """Candidate code runs in the node pods' `node` containers (its ranks, through sshd): a well-formed result
    it leaves in such a pod's termination message and log, in a pod newer than the launcher's, is not read;
    the launcher's judge's is."""
    honest, forged = evaluated("r-c00003"), evaluated("r-c00003", score=99.0, metrics={"f": 99.0})
    tj = "r-eval-00003"

    def pod(name: str, job: str, result: EvaluationResult, when: str) -> dict[str, Any]:
        status = {
            "name": "node",
            "state": {"terminated": {"exitCode": 0, "message": result.termination_message()}},
        }
        labels = {TRAINJOB_LABEL: tj, MPI_JOB_LABEL: job}
        meta = {"name": name, "labels": labels, "creationTimestamp": when}
        return {"metadata": meta, "status": {"containerStatuses": [status]}, "log": result.log_line() + "\n"}

    pods_ = [
        pod("l", "launcher", honest, "2026-01-01T00:00:00Z"),
        pod("n", "node", forged, "2026-01-01T00:09:00Z"),
    ]

    class FakeKube:
        async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict]:
            return [p for p in pods_ if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]

        async def pod_log(self, namespace, name, container, tail_lines, limit_bytes):
            return next(p["log"] for p in pods_ if p["metadata"]["name"] == name)

    job = JobInfo(tj, Role.EVALUATE, "00003", 0, "r-c00003", "succeeded", "TrainJob")
    got = await published_result(FakeKube(), NAMESPACE, job)  # type: ignore[arg-type]
    assert got is not None and got.score == honest.score != 99.0


def test_the_hostfile_names_the_node_pods_first_and_the_launcher_last():
    """Trainer v2.3.0 writes the hostfile in the order of the runtime's replicated Jobs (plugins/mpi/mpi.go,
    core/trainingruntime.go), and JobSet's webhook (v0.12.0) refuses `dependsOn` on the first one, so the
    launcher, which waits for the nodes' sshd, comes last: rank 0 and the rendezvous are on a node pod. The
    runner does not rely on being rank 0 (tasks/linear_attention/run.py: the rank on the launcher's host
    sends the program and settings and writes the result; tests/tasks/test_linear_attention.py,
    test_a_rank_on_another_node_trains_from_what_the_launcher_host_sends)."""
    trainjob = build_trainjob(RUN, SPEC, CONFIG, JUDGED, REQ)
    runtime = build_runtime(RUN, SPEC, CONFIG, JUDGED)
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == ["node", "launcher"]
    assert "dependsOn" not in jobs[0] and jobs[1]["dependsOn"] == [{"name": "node", "status": "Ready"}]
    [hostfile] = [o for o in jobset_pods(trainjob, runtime).objects if o["kind"] == "ConfigMap"]
    name = trainjob["metadata"]["name"]
    hosts = [line.split()[0] for line in hostfile["data"]["hostfile"].splitlines()]
    assert hosts == [f"{name}-node-0-0.{name}", f"{name}-node-0-1.{name}", f"{name}-launcher-0-0.{name}"]
