"""The pod runner: its reading of a pod spec (which uid, which command; which network: test_netpol.py),
then, marked `images`, pods run in a built image: env and Secrets, emptyDirs, the NetworkPolicy, a real uid,
pods that cannot start, pods of several containers (init containers first; containers side by side, each its
own uid, sharing the pod's volumes, loopback, hostname and /dev/shm), ConfigMap volumes and each container's
termination message."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from kubevolve.runtime.kubernetes.netpol import evaluation_isolation_policy
from kubevolve.testing import Api, declare_resources
from kubevolve.testing.netpol import NETWORK_POLICIES, declare_network_policies
from kubevolve.testing.pods.runner import ContainerResult, PodResult, PodRunner
from kubevolve.testing.pods.spec import ImageConfig, PodError, command_line, identity
from tests.kit.images import built_image, derived_image, hardened_pod, remove_image

EVALUATION = {"kubevolve.io/role": "evaluate", "kubevolve.io/network": "none"}  # an evaluation pod's labels

IMAGE = ImageConfig(entrypoint=["kubevolve"], cmd=["--help"], env={}, user="65532:65532", workdir="/opt")
READ_ONLY = {"readOnlyRootFilesystem": True}


def test_the_image_config_is_read_from_the_oci_config():
    config = ImageConfig.from_oci(
        {"Entrypoint": ["kubevolve"], "Env": ["PATH=/opt/venv/bin:/usr/bin", "A=b=c"], "User": "65532:65532"}
    )
    assert config.env == {"PATH": "/opt/venv/bin:/usr/bin", "A": "b=c"}
    assert (config.entrypoint, config.cmd, config.user, config.workdir) == (
        ["kubevolve"],
        [],
        "65532:65532",
        "/",
    )


@pytest.mark.parametrize(
    ("container", "argv"),
    [
        ({}, ["kubevolve", "--help"]),  # the image's entrypoint and cmd
        ({"args": ["operator", "--help"]}, ["kubevolve", "operator", "--help"]),  # args replace cmd
        ({"command": ["python", "-V"]}, ["python", "-V"]),  # command drops the image's cmd
        ({"command": ["sh", "-c"], "args": ["true"]}, ["sh", "-c", "true"]),
    ],
)
def test_command_and_args_follow_kubernetes_rules(container, argv):
    assert command_line(container, IMAGE) == argv


def test_no_command_at_all_is_an_error():
    with pytest.raises(PodError, match="no command"):
        command_line({}, ImageConfig([], [], {}, "0", "/"))


def test_the_uid_comes_from_the_spec_then_from_the_image():
    pod = {"securityContext": {"runAsNonRoot": True, "fsGroup": 2000, "supplementalGroups": [3000, 2000]}}
    assert identity(pod, {"securityContext": READ_ONLY}, IMAGE) == (65532, 65532, [2000, 3000])
    spec = {"securityContext": {"runAsUser": 1234, "runAsGroup": 1234}}
    assert identity(spec, {"securityContext": {**READ_ONLY, "runAsUser": 4321}}, IMAGE) == (4321, 1234, [])


@pytest.mark.parametrize(
    ("pod", "container", "user", "message"),
    [
        (
            {"securityContext": {"runAsNonRoot": True}},
            READ_ONLY,
            "0",
            "runAsNonRoot and image will run as root",
        ),
        ({}, {**READ_ONLY, "runAsNonRoot": True, "runAsUser": 0}, "65532", "runAsNonRoot"),
        ({}, READ_ONLY, "kubevolve", "non-numeric user"),
        ({}, {}, "65532", "read-only root"),
        ({}, {"readOnlyRootFilesystem": False}, "65532", "read-only root"),
        ({}, {**READ_ONLY, "capabilities": {"add": ["NET_ADMIN"]}}, "65532", "capabilities"),
        ({}, {**READ_ONLY, "privileged": True}, "65532", "privileged"),
    ],
)
def test_pods_the_kubelet_or_this_runner_refuses(pod, container, user, message):
    image = ImageConfig(["kubevolve"], [], {}, user, "/")
    with pytest.raises(PodError, match=message):
        identity(pod, {"securityContext": container}, image)


def test_a_pod_succeeds_only_when_every_container_does():
    judge, candidate = (
        ContainerResult("judge", 0, "scored\n", 65532),
        ContainerResult("candidate", 0, "", 2000),
    )
    ok = PodResult((judge, candidate), network=False)
    assert ok.exit_code == 0 and ok.container("candidate").uid == 2000
    assert ok.output == "== judge (exit 0)\nscored\n== candidate (exit 0)\n"
    failed = PodResult((judge, ContainerResult("candidate", 3, "boom\n", 2000)), network=False)
    assert failed.exit_code == 3 and "== candidate (exit 3)\nboom" in failed.output
    assert PodResult((judge,), network=True).output == "scored\n"  # one container: its output as it is


# --- pods run in a built image (the operator's, the smallest) ---------------------------------------------

SHOW = """
import json, os, socket
secret = open("/etc/llm/key").read() if os.path.exists("/etc/llm/key") else None
print(json.dumps({
    "uid": os.getuid(), "groups": sorted(os.getgroups()), "hostname": socket.gethostname(),
    "env": {k: os.environ.get(k) for k in ("LLM_KEY", "PLAIN", "HOME", "PATH")},
    "secret_file": secret, "secret_mode": oct(os.stat("/etc/llm/key").st_mode & 0o777) if secret else None,
    "scratch_before": os.listdir("/scratch"),
    "interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]),
}))
open("/scratch/left-behind", "w").write("x")
"""


@pytest.fixture
async def lab_api(kmock):
    declare_resources(kmock)
    declare_network_policies(kmock)
    client = Api(str(kmock.url))
    yield client
    await client.close()


def show_pod(image: str, **container) -> dict:
    pod = hardened_pod(image, command=["python", "-c", SHOW], **container)
    pod["volumes"].append({"name": "llm", "secret": {"secretName": "llm", "defaultMode": 0o440}})
    pod["containers"][0]["volumeMounts"].append({"name": "llm", "mountPath": "/etc/llm", "readOnly": True})
    return pod


@pytest.mark.slow
@pytest.mark.images
async def test_a_pod_gets_its_env_volumes_and_network_policy(lab_api):
    image = built_image("operator")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm", "namespace": "lab-a"}}
    secret["data"] = {"key": base64.b64encode(b"sk-test").decode()}
    await lab_api.create("v1/secrets", secret)
    await lab_api.create(NETWORK_POLICIES, evaluation_isolation_policy("lab-a"))
    env = [
        {"name": "LLM_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "key"}}},
        {"name": "PLAIN", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
    ]
    runner = PodRunner(lab_api)
    try:
        results = {}
        for role in ("propose", "evaluate"):
            pod = show_pod(image, env=env)
            labels = EVALUATION if role == "evaluate" else {"kubevolve.io/role": role}
            results[role] = await runner.run("lab-a", f"toy-{role}-1", labels, pod)
    finally:
        await runner.close()
    facts = {}
    for role, result in results.items():
        assert result.exit_code == 0, result.output
        facts[role] = json.loads(result.output.strip().splitlines()[-1])
    shown = facts["propose"]
    assert shown["uid"] == 65532 and shown["groups"] == [65532] and shown["hostname"] == "toy-propose-1"
    assert shown["env"] == {"LLM_KEY": "sk-test", "PLAIN": "1", "HOME": "/tmp", "PATH": shown["env"]["PATH"]}
    assert shown["env"]["PATH"].startswith("/opt/venv/bin:")  # from the image's config
    assert shown["secret_file"] == "sk-test" and shown["secret_mode"] == "0o440"
    assert shown["scratch_before"] == [] and facts["evaluate"]["scratch_before"] == []  # emptyDirs are fresh
    # the evaluation policy cuts evaluation pods off (loopback only); proposal pods keep the node's network
    assert results["propose"].network and len(shown["interfaces"]) > 1
    assert not results["evaluate"].network and facts["evaluate"]["interfaces"] == ["lo"]


@pytest.mark.slow
@pytest.mark.images
async def test_the_pod_uid_is_a_real_uid(tmp_path):
    """A file the image leaves readable by root only stays unreadable to the pod (uid 65532 on the host too)."""
    secret = tmp_path / "root-only"
    secret.write_text("only root")
    image = derived_image(built_image("operator"), {secret: ("/opt/kubevolve/root-only", "0600")})
    runner = PodRunner()
    try:
        pod = hardened_pod(image, command=["cat", "/opt/kubevolve/root-only"])
        result = await runner.run("lab-a", "reader", {}, pod)
    finally:
        await runner.close()
        remove_image(image)
    assert result.exit_code != 0 and "Permission denied" in result.output


@pytest.mark.slow
@pytest.mark.images
async def test_pods_that_cannot_start(lab_api):
    image = built_image("operator")
    runner = PodRunner(lab_api)
    try:
        with pytest.raises(PodError, match="is not built here") as missing:
            await runner.run("lab-a", "p", {}, hardened_pod("localhost/no-such-image:1"))
        assert missing.value.reason == "ErrImageNeverPull"
        env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
        with pytest.raises(PodError, match="secret 'absent' not found"):
            await runner.run("lab-a", "p", {}, hardened_pod(image, env=env))
        as_root = hardened_pod(image)
        as_root["securityContext"]["runAsUser"] = 0
        with pytest.raises(PodError, match="runAsNonRoot"):
            await runner.run("lab-a", "p", {}, as_root)
    finally:
        await runner.close()


# A judge and a candidate, as issue 13's evaluation pods may run them: an init container lays out the work,
# the judge (uid 65532) serves on the pod's loopback, the candidate (uid 2000, a uid of its own) reads the
# work from the shared emptyDir, reaches the judge over loopback and leaves a file in /dev/shm; all under
# the evaluation NetworkPolicy (no network beyond the pod). JSON facts on each container's last line.
PREPARE = """
import json, os
open("/shared/work", "w").write("21")
print(json.dumps({"uid": os.getuid()}))
"""
JUDGE = """
import json, os, socket
server = socket.create_server(("127.0.0.1", 8765))
server.settimeout(30)
conn, _ = server.accept()
got = int(conn.makefile().readline())
# the judge's own file: the candidate's uid cannot read it
os.write(os.open("/shared/verdict", os.O_WRONLY | os.O_CREAT, 0o600), str(got * 2).encode())
print(json.dumps({"uid": os.getuid(), "hostname": socket.gethostname(), "got": got}))
"""
CANDIDATE = """
import json, os, socket, time
work = open("/shared/work").read()
open("/dev/shm/left-by-candidate", "w").write("x")
for _ in range(300):
    try:
        conn = socket.create_connection(("127.0.0.1", 8765))
        break
    except OSError:
        time.sleep(0.1)
conn.sendall((work + "\\n").encode())
conn.close()
interfaces = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
print(json.dumps({"uid": os.getuid(), "hostname": socket.gethostname(), "interfaces": interfaces}))
"""
SHOW_SHARED = """
import json, os, time
while not os.path.exists("/shared/verdict"):
    time.sleep(0.05)
try:
    verdict = open("/shared/verdict").read()
except OSError as err:
    verdict = err.strerror
facts = {"uid": os.getuid(), "verdict": verdict, "shm": os.listdir("/dev/shm")}
print(json.dumps(facts | {"pids": sorted(os.listdir("/proc"))}))
"""


def judged_pod(image: str) -> dict:
    pod = hardened_pod(image)
    pod["volumes"].append({"name": "shared", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}})
    base = pod["containers"][0]
    base["volumeMounts"].append({"name": "shared", "mountPath": "/shared"})

    def container(name: str, code: str, uid: int | None = None) -> dict:
        made = copy.deepcopy(base) | {"name": name, "command": ["python", "-c", code]}
        if uid is not None:
            made["securityContext"] = {**made["securityContext"], "runAsUser": uid, "runAsGroup": uid}
        return made

    pod["initContainers"] = [container("prepare", PREPARE, uid=1000)]
    pod["containers"] = [
        container("judge", JUDGE),
        container("candidate", CANDIDATE, uid=2000),
        container("observer", SHOW_SHARED, uid=2000),
    ]
    return pod


@pytest.mark.slow
@pytest.mark.images
async def test_a_pod_of_several_containers_shares_volumes_loopback_and_shm(lab_api):
    await lab_api.create(NETWORK_POLICIES, evaluation_isolation_policy("lab-a"))
    runner = PodRunner(lab_api)
    try:
        result = await runner.run("lab-a", "toy-evaluate-7", EVALUATION, judged_pod(built_image("operator")))
        pods_dir = runner.workdir / "pods"
        left_mounted = [
            line for line in Path("/proc/mounts").read_text().splitlines() if str(pods_dir) in line
        ]
    finally:
        await runner.close()
    assert result.exit_code == 0, result.output
    assert [c.name for c in result.containers] == ["prepare", "judge", "candidate", "observer"]
    facts = {c.name: json.loads(c.output.strip().splitlines()[-1]) for c in result.containers}
    assert {name: c.uid for name, c in zip(facts, result.containers, strict=True)} == {
        "prepare": 1000,
        "judge": 65532,
        "candidate": 2000,
        "observer": 2000,
    }
    assert all(facts[name]["uid"] == result.container(name).uid for name in facts)
    assert facts["judge"]["got"] == 21  # the init container's file, through the candidate, over loopback
    assert facts["judge"]["hostname"] == facts["candidate"]["hostname"] == "toy-evaluate-7"
    assert not result.network and facts["candidate"]["interfaces"] == ["lo"]  # the pod's loopback only
    assert facts["observer"]["verdict"] == "Permission denied"  # each container's uid is a real uid
    assert facts["observer"]["shm"] == ["left-by-candidate"]  # one /dev/shm per pod
    assert (
        "1" in facts["observer"]["pids"] and len([p for p in facts["observer"]["pids"] if p.isdigit()]) == 1
    )
    assert left_mounted == []  # the pod's tmpfs volumes and /dev/shm are unmounted when it ends


@pytest.mark.slow
@pytest.mark.images
async def test_a_failing_init_container_ends_the_pod_and_a_failing_container_fails_it(lab_api):
    image = built_image("operator")
    pod = hardened_pod(image, name="main", command=["python", "-c", "print('main ran')"])
    pod["initContainers"] = [dict(pod["containers"][0], name="init", command=["sh", "-c", "echo no; exit 4"])]
    failing = copy.deepcopy(pod)
    del failing["initContainers"]
    failing["containers"].append(dict(pod["containers"][0], name="other", command=["sh", "-c", "exit 5"]))
    runner = PodRunner(lab_api)
    try:
        ended = await runner.run("lab-a", "p1", {}, pod)
        failed = await runner.run("lab-a", "p2", {}, failing)
        with pytest.raises(PodError, match="unique"):
            twice = copy.deepcopy(failing)
            twice["containers"][1]["name"] = "main"
            await runner.run("lab-a", "p3", {}, twice)
        with pytest.raises(PodError, match="sidecar"):
            sidecar = copy.deepcopy(pod)
            sidecar["initContainers"][0]["restartPolicy"] = "Always"
            await runner.run("lab-a", "p4", {}, sidecar)
    finally:
        await runner.close()
    assert ended.exit_code == 4 and [c.name for c in ended.containers] == ["init"]  # main never started
    assert failed.exit_code == 5 and failed.container("main").output == "main ran\n"  # the other still ran


TELL = """
import json, os, sys
given = open("/input/evaluation.json").read()
for path in ("/dev/termination-log", "/tmp/message"):  # the other container's path too, where it can
    try:
        open(path, "w").write(json.dumps({"from": os.environ["WHO"], "forged": True}))
    except OSError:
        pass
open(sys.argv[1], "w").write(json.dumps({"from": os.environ["WHO"], "given": given}))
"""


@pytest.mark.slow
@pytest.mark.images
async def test_a_configmap_volume_and_each_containers_termination_message(lab_api):
    """How an evaluation pod is given its candidate (a ConfigMap) and publishes its result (its container's
    termination message): each container writes only its own file, at its own terminationMessagePath."""
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "toy-eval-1", "namespace": "lab-a"},
    }
    await lab_api.create("v1/configmaps", config_map | {"data": {"evaluation.json": '{"code": "x = 1"}'}})
    pod = hardened_pod(built_image("operator"))
    pod["volumes"].append({"name": "input", "configMap": {"name": "toy-eval-1", "defaultMode": 0o444}})
    base = pod["containers"][0]
    base["volumeMounts"].append({"name": "input", "mountPath": "/input", "readOnly": True})
    judge = copy.deepcopy(base) | {"name": "judge", "command": ["python", "-c", TELL, "/dev/termination-log"]}
    judge["env"] = [{"name": "WHO", "value": "judge"}]
    candidate = copy.deepcopy(base) | {
        "name": "candidate",
        "command": ["python", "-c", TELL, "/tmp/message"],
        "terminationMessagePath": "/tmp/message",
        "env": [{"name": "WHO", "value": "candidate"}],
    }
    candidate["securityContext"] = {**candidate["securityContext"], "runAsUser": 2000, "runAsGroup": 2000}
    pod["containers"] = [judge, candidate]
    runner = PodRunner(lab_api)
    try:
        result = await runner.run("lab-a", "toy-eval-1", {"kubevolve.io/role": "evaluate"}, pod)
    finally:
        await runner.close()
    assert result.exit_code == 0, result.output
    for name in ("judge", "candidate"):  # each its own message: what the other wrote at its path is not it
        told = json.loads(result.container(name).message)
        assert told == {"from": name, "given": '{"code": "x = 1"}'}
