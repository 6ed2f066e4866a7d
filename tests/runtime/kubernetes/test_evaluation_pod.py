"""The evaluation pod's shape (a judge and a candidate container, nothing of the judge's in the candidate's),
what the operator hands it (handover.py) and how it reads back what the pod published (results.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import FailureKind, Role
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import parse_run_spec
from kubevolve.loop.evaluation_io import (
    RESULT_MARKER,
    TERMINATION_LIMIT,
    EvaluationInput,
    EvaluationResult,
    HandoverError,
    read_result,
)
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.handover import (
    INPUT_KEY,
    InputTooLarge,
    evaluation_input,
    judge_seed_secret,
    seed_secret_name,
)
from kubevolve.runtime.kubernetes.jobs import (
    CANDIDATE_UIDS,
    SANDBOX,
    ZYGOTE_SOCKET,
    JobRequest,
    RunRef,
    build_job,
    candidate_uid,
)
from kubevolve.runtime.kubernetes.names import job_name
from kubevolve.runtime.kubernetes.observe import JobInfo
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.results import (
    LOG_BYTES,
    LOG_LINES,
    PARTIAL_NOTE,
    awaiting_result,
    judge_termination,
    published_result,
    store_result,
)
from kubevolve.store import open_store
from kubevolve.testing import RUNS
from kubevolve.testing.kubelet import Kubelet
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, run_to_success, until

RUN = RunRef("packing-1", "lab-a", "uid-123")
CONFIG = OperatorConfig(image="registry.lab/kubevolve:1", store_url="weaviate://weaviate.kv:8080")
JUDGED = TaskFacts(name="circle_packing", metric="sum_radii", cpu=2, memory_mb=1024, disk_mb=300, judged=True)


def spec(**fields):
    return parse_run_spec({"task": "tasks/x", **fields})


def pod_of(job: dict) -> tuple[dict, dict, dict]:
    pod = job["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    return pod, containers["judge"], containers["candidate"]


def test_a_judged_evaluation_pod_splits_judge_and_candidate():
    s = spec(store={"url": "weaviate://x:8080", "apiKeySecret": {"name": "store-key"}})
    job = build_job(RUN, s, CONFIG, JUDGED, JobRequest("evaluate", "00003", 1))
    pod, judge, candidate = pod_of(job)
    # the two meet only on the sandbox volume, at the same path, where the judge listens
    command = parse_step_command(judge["command"])
    assert command.candidate_socket is not None and str(command.candidate_socket) == ZYGOTE_SOCKET
    assert str(command.workspace) == SANDBOX and str(command.input_file) == "/input/evaluation.json"
    assert candidate["command"][-2:] == ["--connect", ZYGOTE_SOCKET]
    assert {"name": "sandbox", "mountPath": SANDBOX} in candidate["volumeMounts"]
    assert {"name": "sandbox", "mountPath": SANDBOX} in judge["volumeMounts"]
    assert [m["name"] for m in candidate["volumeMounts"]] == ["sandbox"]
    # the candidate: a uid of its own, nothing secret; the judge: the seed, no store key
    uid = candidate["securityContext"]["runAsUser"]
    assert uid == candidate_uid(CONFIG, job["metadata"]["name"]) == candidate["securityContext"]["runAsGroup"]
    assert CONFIG.candidate_uid_base <= uid < CONFIG.candidate_uid_base + CANDIDATE_UIDS
    assert all("valueFrom" not in e for e in candidate["env"])
    secret_env = {e["name"]: e["valueFrom"] for e in judge["env"] if "valueFrom" in e}
    assert secret_env == {
        "KUBEVOLVE_JUDGE_SEED": {"secretKeyRef": {"name": seed_secret_name(RUN.name), "key": "seed"}}
    }
    assert pod["shareProcessNamespace"] is False and pod["automountServiceAccountToken"] is False
    # the candidate's container gets the stage, its files in memory included; the judge's requests the step
    # and may burst to the stage
    assert candidate["resources"] == {
        "requests": {"cpu": "2000m", "memory": "1324Mi"},
        "limits": {"cpu": "2000m", "memory": "1324Mi"},
    }
    # the candidate's files: a tmpfs of the task's disk size, which the kernel bounds and the judge counts
    assert {"name": "sandbox", "emptyDir": {"medium": "Memory", "sizeLimit": "300Mi"}} in pod["volumes"]
    assert judge["resources"]["requests"] == {"cpu": "500m", "memory": "768Mi"}
    assert judge["resources"]["limits"] == {"cpu": "2500m", "memory": "1792Mi"}


def test_each_evaluation_gets_its_own_candidate_uid_and_gpus_go_to_the_candidate():
    uids = {
        pod_of(build_job(RUN, spec(), CONFIG, JUDGED, JobRequest("evaluate", f"{k:05d}")))[2][
            "securityContext"
        ]["runAsUser"]
        for k in range(50)
    }
    assert len(uids) == 50
    gpu = TaskFacts(name="t", metric="m", gpus=2, judged=True)
    _, judge, candidate = pod_of(build_job(RUN, spec(), CONFIG, gpu, JobRequest("evaluate", "00001")))
    assert candidate["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in judge["resources"]["limits"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in judge["env"]
    assert all(e["name"] != "NVIDIA_VISIBLE_DEVICES" for e in candidate["env"])
    assert {"name": "dshm", "mountPath": "/dev/shm"} in candidate["volumeMounts"]
    assert all(m["name"] != "dshm" for m in judge["volumeMounts"])


def test_the_candidate_uid_base_is_a_setting():
    config = OperatorConfig.from_env({"KUBEVOLVE_OPERATOR_CANDIDATE_UID_BASE": "3000000"})
    assert config.candidate_uid_base == 3_000_000
    assert 3_000_000 <= candidate_uid(config, "x-eval-00001") < 3_000_000 + CANDIDATE_UIDS


def test_the_configmap_holds_the_candidate_and_the_spec_and_refuses_what_does_not_fit():
    node = Node(run_id="packing-1", code="print(1)\n", id="packing-1-c00003")
    body = evaluation_input("packing-1-eval-00003", "lab-a", "packing-1", "uid-123", {"task": "t"}, node)
    assert body["kind"] == "ConfigMap" and body["immutable"] is True
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    given = EvaluationInput.from_json(body["data"][INPUT_KEY])
    assert (given.run_id, given.node_id, given.code, given.spec) == (
        "packing-1",
        "packing-1-c00003",
        "print(1)\n",
        {"task": "t"},
    )
    big = Node(run_id="packing-1", code="x" * (1 << 20), id="packing-1-c00004")
    with pytest.raises(InputTooLarge, match="maxCodeBytes"):
        evaluation_input("n", "lab-a", "packing-1", "uid-123", {}, big)


def test_the_seed_secret_is_random_per_creation_and_owned_by_the_run():
    a, b = (judge_seed_secret("lab-a", "packing-1", "uid-123") for _ in range(2))
    assert a["metadata"]["name"] == seed_secret_name("packing-1") == "packing-1-judge-seed"
    assert a["metadata"]["ownerReferences"][0]["kind"] == "EvolutionRun"
    seeds = [int(base64.b64decode(s["data"]["seed"])) for s in (a, b)]
    assert seeds[0] != seeds[1] and all(0 <= x < 2**63 for x in seeds)


# --- what the pod publishes -------------------------------------------------------------------------------


def evaluated(node_id: str = "r-c00001", **fields) -> EvaluationResult:
    node = Node(run_id="r", code="", id=node_id)
    node.stage, node.score, node.metrics = Stage.EVALUATED, 2.5, {"f": 2.5, "x": 1.0}
    node.artifacts, node.log_tail, node.timings = {"curve": "0.1 0.2\n" * 50}, "ok\n", {"quick": 0.4}
    for key, value in fields.items():
        setattr(node, key, value)
    return EvaluationResult.of(node)


def test_a_result_round_trips_through_the_log_and_the_termination_message():
    result = evaluated()
    message = result.termination_message()
    assert len(message.encode()) <= TERMINATION_LIMIT
    log = f"some output\n{result.log_line()}\n"
    assert read_result("r-c00001", message, log) == (result, True)
    # no log: the compact copy, without artifacts and log tail
    compact, complete = read_result("r-c00001", message, None)
    assert not complete and compact.metrics == result.metrics and compact.artifacts == {}
    node = compact.apply(Node(run_id="r", code="", id="r-c00001", timings={"propose": 3.0}))
    assert node.stage is Stage.EVALUATED and node.timings == {"propose": 3.0, "quick": 0.4}


def test_a_result_too_large_for_the_termination_message_needs_its_log():
    result = evaluated(metrics={f"m{i}": float(i) for i in range(400)} | {"f": 1.0})
    message = json.loads(result.termination_message())
    assert set(message) == {"node", "sha256"}
    assert read_result("r-c00001", result.termination_message(), result.log_line())[1] is True
    with pytest.raises(HandoverError, match="no copy"):
        read_result("r-c00001", result.termination_message(), "nothing here")


def test_a_forged_log_line_does_not_match_the_judges_digest():
    """Whatever else reaches the judge container's log (it is the judge's stdout; nothing of the candidate's
    is written there, but suppose it were), only the line whose digest the termination message names counts."""
    honest = evaluated(score=1.0, metrics={"f": 1.0})
    forged = evaluated(score=99.0, metrics={"f": 99.0})
    log = f"{honest.log_line()}\n{forged.log_line()}\n"
    result, complete = read_result("r-c00001", honest.termination_message(), log)
    assert complete and result.score == 1.0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"node": "r-c00002"}, "not r-c00001"),
        ({"stage": "proposed"}, "not the end of an evaluation"),
        ({"score": None}, "has a score"),
        ({"failure": "raised"}, "no failure"),
        ({"metrics": {"f": "2.5"}}, "finite number"),
        ({"metrics": {"f": True}}, "finite number"),
        ({"timings": {"quick": -1e400}}, "finite number"),
        ({"artifacts": {"a": 1}}, "map names to text"),
        ({"extra": 1}, "unknown fields"),
        ({"failure": "pwned", "stage": "failed_quick"}, "unknown failure kind"),
    ],
)
def test_a_malformed_result_is_refused(change, problem):
    data = evaluated().to_dict() | change
    line = RESULT_MARKER + json.dumps(data)
    message = json.dumps({"node": "r-c00001", "sha256": hashlib.sha256(line.encode()).hexdigest()})
    with pytest.raises(HandoverError, match=problem):
        read_result("r-c00001", message, line)


@pytest.mark.parametrize(
    "where",
    ["score", "metric", "timing", "nested termination message", "nested logged line"],
)
def test_a_result_that_breaks_the_parser_is_refused_not_raised(where):
    """A legacy task's candidate runs in the judge's container and writes its termination message and log as
    it likes. A 400-digit integer (float() overflows) or JSON nested past the recursion limit must be a
    refused result (HandoverError, a failed attempt), not an OverflowError or RecursionError that escapes
    `collect_results` and fails every reconcile pass of the run."""
    huge = 10**400
    data = evaluated().to_dict()
    if where == "score":
        data["score"] = huge
    elif where == "metric":
        data["metrics"] = {"f": huge}
    elif where == "timing":
        data["timings"] = {"quick": huge}
    if where == "nested termination message":
        message, line = "[" * 5000 + "]" * 5000, None
    else:
        line = RESULT_MARKER + (
            "[" * 5000 + "]" * 5000 if where == "nested logged line" else json.dumps(data)
        )
        digest = hashlib.sha256(line.encode()).hexdigest()
        message = json.dumps({"node": "r-c00001", "sha256": digest})
    with pytest.raises(HandoverError):
        read_result("r-c00001", message, line)


def test_a_stored_result_records_its_jobs_wall_time_and_no_pod_can_claim_one(tmp_path):
    """The operator's pacer counts a slot busy from the evaluation Job's start to its end (pod start-up
    included): stored with the result, from the watch stream's times. A published `job` timing is dropped."""
    store = open_store(f"sqlite:///{tmp_path / 'kubevolve.db'}")
    for key in ("00001", "00002"):
        store.add_node(Node(run_id="r", code="", id=f"r-c{key}"))
    finished = JobInfo("r-eval-00001", Role.EVALUATE, "00001", 0, "r-c00001", "succeeded")
    finished = dataclasses.replace(finished, started_at=100.0, finished_at=107.5)
    store_result(store, evaluated(), finished)
    assert store.get_node("r-c00001").timings == {"quick": 0.4, "evaluate_job": 7.5}
    forged = evaluated("r-c00002", timings={"quick": 0.4, "evaluate_job": 1e9})
    store_result(store, forged, dataclasses.replace(finished, started_at=None))
    assert store.get_node("r-c00002").timings == {"quick": 0.4}
    store.close()


def test_a_failed_candidate_is_a_result_too():
    node = Node(run_id="r", code="", id="r-c00001")
    node.fail(Stage.FAILED_QUICK, FailureKind.TIMEOUT, "quick stage: timeout")
    result = EvaluationResult.of(node)
    assert read_result("r-c00001", result.termination_message(), result.log_line())[0] == result
    with pytest.raises(HandoverError, match="not r-c00001"):
        read_result("r-c00001", json.dumps({"node": "r-c00009", "sha256": "0"}), result.log_line())


def test_only_the_judge_containers_clean_exit_counts():
    def pod(*statuses):
        return {"status": {"containerStatuses": list(statuses)}}

    def status(name, code, message="m"):
        return {"name": name, "state": {"terminated": {"exitCode": code, "message": message}}}

    assert judge_termination(pod(status("candidate", 0, "forged"), status("judge", 0, "real"))) == "real"
    assert judge_termination(pod(status("candidate", 0, "forged"))) is None
    assert judge_termination(pod(status("judge", 1, "real"))) is None
    assert judge_termination(pod({"name": "judge", "state": {"running": {}}})) is None


def test_results_are_awaited_only_for_finished_evaluation_jobs_of_proposed_nodes():
    proposed, final = Node(run_id="r", code="", id="a"), Node(run_id="r", code="", id="b")
    final.stage, final.score = Stage.EVALUATED, 1.0

    def job(name, node, state="succeeded", kind="Job", role="evaluate"):
        return JobInfo(name, role, "00001", 0, node, state, kind)

    jobs = [
        job("done", "a"),
        job("failed", "a", "failed"),
        job("running", "a", "active"),
        job("stored", "b"),
        job("train", "a", kind="TrainJob"),
        job("training", "a", "active", kind="TrainJob"),
        job("proposal", "a", role="propose"),
        job("gone", "c"),
    ]
    due = awaiting_result(jobs, {"a": proposed, "b": final, "c": None})
    assert [j.name for j in due] == ["done", "failed", "train"]  # a TrainJob's judge publishes as a Job's


# --- a candidate that forges its result where the pod publishes -------------------------------------------

FORGED_NODE = "forge-c00000"  # the run's initial program, the first candidate it evaluates
HOSTILE_PROGRAM = '''\
import hashlib
import json
import os

FORGED = {"node": "@NODE@", "stage": "evaluated", "score": 99.0, "metrics": {"f": 99.0, "x": 3.0},
          "artifacts": {}, "error": "", "failure": None, "log_tail": "", "timings": {}}
LINE = "@MARKER@" + json.dumps(FORGED, separators=(",", ":"))
MESSAGE = json.dumps({"node": FORGED["node"], "sha256": hashlib.sha256(LINE.encode()).hexdigest(),
                      "result": FORGED})


def forge():
    """The forged result on every path out of the pod it can find: its output, every descriptor but the
    judge's request and reply, every termination log and result file above its scratch."""
    print(LINE, flush=True)
    for fd in [1, 2, *range(5, 256)]:
        try:
            os.write(fd, (LINE + "\\n").encode())
        except OSError:
            pass
    places, folder = ["/dev/termination-log"], os.getcwd()
    while folder != "/":
        for name in ("candidate.termination-log", "judge.termination-log", "termination-log", "result.json"):
            places.append(os.path.join(folder, name))
        folder = os.path.dirname(folder)
    for path in places:
        try:
            with open(path, "w") as out:
                out.write(MESSAGE)
        except OSError:
            pass


# EVOLVE-BLOCK-START
def solve():
    forge()
    return 0.5, 0.5
# EVOLVE-BLOCK-END
'''.replace("@NODE@", FORGED_NODE).replace("@MARKER@", RESULT_MARKER)


@pytest.fixture
def operator_config(operator_config, readable_task_root):
    return dataclasses.replace(operator_config, task_root=str(readable_task_root))


async def test_a_result_the_candidate_forges_where_the_pod_publishes_is_not_believed(
    kmock, api, operator, operator_config, store_url
):
    """The candidate container writes a well-formed result naming score 99 to its output, its descriptors,
    its own termination log (which the kubelet reports in the pod's status) and every file it can reach on
    the way up from its scratch, the volume it shares with the judge included. The operator stores what the
    judge's container published: the honest score of the point the candidate returned."""
    write_task(Path(operator_config.task_root) / "toy", program=HOSTILE_PROGRAM)
    manifest = run_manifest("forge", "toy", budget={"maxCandidates": 1})
    kubelet = await run_to_success(kmock, api, operator, manifest, 60)

    node = open_store(store_url, tenant=NAMESPACE).get_node(FORGED_NODE)
    honest = -((0.5 - 3) ** 2) - (0.5 + 1) ** 2
    assert node.stage is Stage.EVALUATED and node.score == node.metrics["f"] == honest
    assert node.metrics["x"] == 0.5
    # the forgery was written where the pod publishes: the candidate container's termination message
    pod = kubelet.pod_runs[job_name("forge", Role.EVALUATE, "00000")]
    judge, candidate = pod.containers["judge"], pod.containers["candidate"]
    assert '"score": 99.0' in candidate.message and FORGED_NODE in candidate.message
    assert "99.0" not in judge.message and json.loads(judge.message)["node"] == FORGED_NODE
    if kubelet.identified:  # the judge's own termination log was out of the candidate's reach
        assert candidate.uid != judge.uid


async def test_a_pod_that_publishes_no_usable_result_is_a_failed_attempt(
    kmock, api, operator, store_url, readable_task_root, monkeypatch
):
    """A judge container whose termination message names another node (or is not a result at all) stores
    nothing: the Job counts as a failed attempt, is retried, and the candidate ends recorded failed."""
    real = EvaluationResult.termination_message

    def misdirected(self: EvaluationResult) -> str:
        if self.node_id == "badpub-c00002":
            return json.dumps({"node": "badpub-c00001", "sha256": "0" * 64})
        return real(self)

    monkeypatch.setattr(EvaluationResult, "termination_message", misdirected)
    write_task(readable_task_root / "toy")
    kubelet = Kubelet(api, mode="fake", concurrency=4)
    kubelet.start()
    await operator.start()
    spec = {"budget": {"maxCandidates": 4}, "failurePolicy": {"maxAttempts": 2, "backoffSeconds": 0.3}}
    await api.create(RUNS, run_manifest("badpub", "toy", **spec))
    try:
        await until(lambda: run_status(kmock, "badpub").get("phase") == "Succeeded", 60, "Succeeded")
    finally:
        await kubelet.stop()
    assert kubelet.started["badpub-eval-00002"] == 1 and kubelet.started["badpub-eval-00002-a1"] == 1
    store = open_store(store_url, tenant=NAMESPACE)
    node = store.get_node("badpub-c00002")
    assert "finished without storing a result" in node.error
    assert node.stage is Stage.FAILED_QUICK and node.failure is FailureKind.JOB_FAILED and node.score is None
    assert all(n.stage is Stage.EVALUATED for n in store.list_nodes("badpub") if n.id != node.id)


async def test_the_judges_log_is_read_with_a_byte_limit_and_the_compact_copy_stands_in():
    """A legacy task's candidate shares the judge's container and log and may fill the lines before the
    result: the operator reads at most LOG_BYTES (the kubelet counts them from the first line it sends), and
    when that cuts off the result line the termination message's compact copy is stored instead."""
    result = evaluated(node_id="r-c00003")
    flood = ("x" * (1 << 20) + "\n") * 49  # 49 lines of 1 MiB, then the result: the tail is 49 MiB and more
    reads: list[dict] = []

    class FakeKube:
        async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict]:
            status = {
                "name": "judge",
                "state": {"terminated": {"exitCode": 0, "message": result.termination_message()}},
            }
            return [
                {
                    "metadata": {"name": "p", "creationTimestamp": "t"},
                    "status": {"containerStatuses": [status]},
                }
            ]

        async def pod_log(self, namespace, pod, container, tail_lines, limit_bytes):
            reads.append({"container": container, "tail_lines": tail_lines, "limit_bytes": limit_bytes})
            return (flood + result.log_line() + "\n").encode()[:limit_bytes].decode(errors="replace")

    job = JobInfo(
        name="r-eval-00003", role=Role.EVALUATE, key="00003", attempt=0, node_id="r-c00003", state="Succeeded"
    )
    got = await published_result(FakeKube(), "lab-a", job)  # type: ignore[arg-type]
    assert reads == [{"container": "judge", "tail_lines": LOG_LINES, "limit_bytes": LOG_BYTES}]
    assert len(flood) > LOG_BYTES and got is not None
    assert got.score == result.score and got.metrics == result.metrics and got.log_tail == PARTIAL_NOTE
