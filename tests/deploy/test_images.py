"""The container images: what a reviewer checks in the Dockerfiles (pinned bases, multi-stage builds, a
non-root user, entrypoints that exist), and, marked `images` (`make test-images` builds them first), the built
images themselves, each run as a pod runs it (kubevolve.testing.pods.runner): the entrypoint as uid 65532 on a
read-only root, every file of the app readable by that uid, the worker's CPU torch, the trainer's CPU smoke
test and the linear_attention quick stage inside the trainer, and a TrainJob launcher's candidate, as a uid of
its own, logging in to a node pod's sshd."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.main import get_command

from kubevolve.cli.app import app
from kubevolve.core.kinds import Role
from kubevolve.core.spec import parse_run_spec
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, candidate_uid
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.trainjob import build_runtime, build_trainjob
from kubevolve.testing.pods.runner import PodRunner
from kubevolve.testing.trainer import jobset_pods
from tests.kit.images import built_image, hardened_pod
from tests.kit.paths import REPO

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_the_three_images_exist():
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "worker", "trainer"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_is_pinned_multistage_and_non_root(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    froms = [a.split() for kind, a in steps if kind == "FROM"]
    stages = {f[2] for f in froms if len(f) == 3 and f[1].upper() == "AS"}
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    for base in (f[0] for f in froms if f[0] not in stages):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert ":" in resolved and not resolved.endswith(":latest"), f"unpinned base {resolved}"
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    users = [a for kind, a in final if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage must run as non-root"
    assert any(kind == "COPY" and re.match(r"--from=(\w+)", a) for kind, a in final), "the venv from a stage"
    runs = " ".join(a for kind, a in steps if kind == "RUN")
    assert re.search(r"pip wheel --no-deps --wheel-dir /dist \.", runs), "builds kubevolve from the checkout"
    installs = " ".join(a for kind, a in final if kind == "RUN")
    assert "pip install" in installs and "/tmp/kubevolve-dist/*.whl" in installs and "pip check" in installs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_entrypoint_is_a_real_command(dockerfile):
    entry = [a for kind, a in instructions(dockerfile) if kind == "ENTRYPOINT"][-1]
    argv = re.findall(r'"([^"]+)"', entry)
    assert argv[0] == "kubevolve"
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for word in argv[1:]:
        assert word in commands, f"{dockerfile}: `kubevolve {word}` does not exist"


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `**` any folders, `*` and `?` within one path element."""
    out = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
        for part in re.split(r"(\*\*|\*|\?)", pattern.strip("/"))
    )
    return re.compile(out + "$")


def sent_to_builder(path: str) -> bool:
    """Whether the build context holds PATH: the last pattern matching it or a folder above it decides."""
    rules = [
        (line.startswith("!"), dockerignore_pattern(line.lstrip("!")))
        for line in (raw.strip() for raw in (REPO / ".dockerignore").read_text().splitlines())
        if line and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for keep, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            sent = keep
    return sent


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copied_file_reaches_the_build_context(dockerfile):
    """A COPY whose source .dockerignore leaves out fails only when the image is built."""
    sources = [
        source
        for kind, args in instructions(dockerfile)
        if kind == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
        if not source.startswith("--")
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: no such file in the checkout"
        assert sent_to_builder(source), f"{dockerfile}: COPY {source} is left out by .dockerignore"
    assert not sent_to_builder(".venv/bin/python") and not sent_to_builder("tests/conftest.py")


# what a pod's uid may do in the image: JSON on the last line
PROBE = """
import json, os, socket
facts = {"uid": os.getuid(), "gid": os.getgid(), "hostname": socket.gethostname()}
try:
    open("/opt/kubevolve/probe", "w")
except OSError as err:
    facts["root"] = err.strerror
open("/scratch/probe", "w").write("x")
facts["scratch"] = open("/scratch/probe").read() == "x"
facts["interfaces"] = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])
facts["unreadable"] = [
    os.path.join(folder, name)
    for top in ("/opt/venv", "/opt/kubevolve")
    for folder, _, names in os.walk(top)
    for name in names
    if not os.access(os.path.join(folder, name), os.R_OK)
][:5]
try:
    import torch
    facts["torch_cuda"] = torch.version.cuda
except ImportError:
    facts["torch_cuda"] = "no torch"
print(json.dumps(facts))
"""


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.images
@pytest.mark.parametrize(
    ("name", "args", "torch_cuda"),
    [
        ("operator", ["--help"], "no torch"),
        ("worker", ["step", "--help"], None),
        ("trainer", ["step", "--help"], "13.0"),
    ],
)
async def test_the_entrypoint_runs_as_65532_on_a_read_only_root(name, args, torch_cuda):
    image = built_image(name)
    runner = PodRunner()
    try:
        entry = await runner.run("lab-a", f"{name}-entry", {}, hardened_pod(image, args=args))
        probe = await runner.run(
            "lab-a", f"{name}-probe", {}, hardened_pod(image, command=["python", "-c", PROBE])
        )
    finally:
        await runner.close()
    command = "kubevolve operator" if name == "operator" else "kubevolve step"
    assert entry.exit_code == 0 and "Usage:" in entry.output and command in entry.output, entry.output
    assert entry.container("step").uid == 65532  # from the image's USER: the pod spec does not set runAsUser
    assert probe.exit_code == 0, probe.output
    facts = last_json(probe.output)
    assert facts["uid"] == facts["gid"] == 65532 and facts["hostname"] == f"{name}-probe"
    assert facts["root"] == "Read-only file system" and facts["scratch"] is True
    assert facts["unreadable"] == [], "files of the app that its uid cannot read"
    assert facts["torch_cuda"] == torch_cuda  # the worker's torch is the CPU build, the trainer's CUDA 13


# what the zygote does to each candidate before its code runs, here in a worker pod (uid 65532, no root): the
# seccomp filter is a BPF program handed to prctl through ctypes (libc only, no libseccomp in the image)
SECCOMP = """
import errno, json, socket
from kubevolve.loop.engineer import confine
confine.no_new_privileges()
installed = confine.restrict_syscalls()
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    inet = "opened"
except OSError as err:
    inet = errno.errorcode[err.errno]
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).family == socket.AF_UNIX
print(json.dumps({"installed": installed, "inet": inet, "unix": unix}))
"""


@pytest.mark.slow
@pytest.mark.images
async def test_the_candidates_seccomp_filter_works_in_a_worker_pod():
    runner = PodRunner()
    try:
        pod = hardened_pod(built_image("worker"), command=["python", "-c", SECCOMP])
        result = await runner.run("lab-a", "toy-evaluate-seccomp", {}, pod)
    finally:
        await runner.close()
    assert result.exit_code == 0, result.output
    assert last_json(result.output) == {"installed": True, "inet": "ENETUNREACH", "unix": True}


@pytest.mark.slow
@pytest.mark.images
async def test_the_trainer_smoke_test_passes_on_the_cpu():
    """images/trainer/smoke.py without a GPU: torch (the CUDA build) and DeepSpeed import, one ZeRO-2 step on
    the CPU. Its `--device cuda` run (images/trainer/gpu-smoke.sh) needs a GPU machine."""
    runner = PodRunner()
    try:
        pod = hardened_pod(
            built_image("trainer"), command=["python", "/opt/kubevolve/smoke.py", "--device", "cpu"]
        )
        result = await runner.run("lab-a", "trainer-smoke", {}, pod)
    finally:
        await runner.close()
    assert result.exit_code == 0, result.output
    report = last_json(result.output)
    assert report["cuda_build"] and report["deepspeed"] == "0.19.8" and report["matmul_max_error"] == 0.0
    assert report["grad_norm"] > 0 and report["loss"] > 0


@pytest.mark.slow
@pytest.mark.images
async def test_the_linear_attention_quick_stage_runs_in_the_trainer():
    """The engine inside the trainer image: a one-candidate run of linear_attention's demo (the quick stage:
    the mixer checks, MQAR and LM training on the CPU) from the task folder the image ships. `kubevolve` is
    the pod's command, pid 1, as in the operator's pods."""
    run = ["kubevolve", "run", "tasks/linear_attention/demo.yaml", "--new", "--max-candidates", "1", "--json"]
    runner = PodRunner()
    try:
        result = await runner.run(
            "lab-a", "trainer-quick", {}, hardened_pod(built_image("trainer"), command=run)
        )
    finally:
        await runner.close()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex("\n{\n") :])  # after the progress lines
    assert summary["phase"] == "Succeeded" and summary["by_stage"] == {"evaluated": 1}, summary
    assert summary["best_score"] > 0.05, summary  # mqar_accuracy above chance (1/32)


# the launcher's candidate (a uid of its own, in no /etc/passwd) as the operator renders it: ssh without the
# wrapper, then its zygote's passwd entry (zygote.write_identity) and ssh with it, to the node pod's sshd
SSH_CLIENT = """
import json, os, subprocess
from kubevolve.loop.engineer.zygote import write_identity
# the image's config, named: the runner's user namespace shows root's files as nobody's, and ssh refuses
# such a file as its system config's Include (a kubelet maps root as root; images/README.md)
config = ["-F", "/etc/ssh/ssh_config.d/kubevolve.conf"]
ssh = ["ssh", *config, "-o", "ConnectionAttempts=60", "-o", "ConnectTimeout=2", "127.0.0.1"]
try:
    bare = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    without = subprocess.run(ssh + ["true"], env=bare, capture_output=True, text=True, timeout=60)
    write_identity()
    logged = subprocess.run(ssh + ["id -un; id -u"], capture_output=True, text=True, timeout=120)
    # mpirun starts a rank through that ssh (127.0.0.2 is not one of this pod's addresses: a remote node)
    rsh = {**os.environ, "OMPI_MCA_plm_rsh_agent": " ".join(["ssh", *config])}
    mpi = ["mpirun", "-n", "1", "--host", "127.0.0.2", "sh", "-c", "id -un"]
    ranks = subprocess.run(mpi, env=rsh, capture_output=True, text=True, timeout=120)
    print(json.dumps({
        "uid": os.getuid(),
        "without": [without.returncode, without.stderr.strip()],
        "with": [logged.returncode, logged.stdout.split(), logged.stderr.strip()],
        "mpirun": [ranks.returncode, ranks.stdout.split(), ranks.stderr.strip()],
    }))
finally:
    open("/done/done", "w").close()
"""
# sshd until the client is done (a node pod's runs until its JobSet ends)
UNTIL_DONE = '"$@" & while [ ! -e /done/done ]; do sleep 0.2; done; kill $!'


CONFIG = OperatorConfig(image="unused", store_url="weaviate://weaviate.kv:8080")


class _Objects:
    """The API server the pod runner asks for Secrets, ConfigMaps and NetworkPolicies: these objects only."""

    def __init__(self, objects: list[dict]):
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    async def get(self, resource: str, namespace: str, name: str) -> dict | None:
        kind = {"v1/secrets": "Secret", "v1/configmaps": "ConfigMap"}[resource]
        return self.objects.get((kind, name))

    async def list(self, resource: str, namespace: str) -> list[dict]:  # egress cut: the pod's own loopback
        return [{"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}]


@pytest.mark.slow
@pytest.mark.images
async def test_the_launchers_candidate_uid_logs_in_to_a_node_pods_sshd():
    """The claim the wrapper answers (ssh exits when its uid has no passwd entry), and the answer: the
    launcher's `candidate` container and a node pod's `node` container as Trainer makes them from the
    operator's TrainJob (kubevolve.testing.trainer), in the trainer image, side by side in one pod, with an ssh
    key as Trainer's Secret holds one (made by the image's ssh-keygen)."""
    image = built_image("trainer")
    keys = Path(tempfile.mkdtemp(prefix="kubevolve-keys-"))  # where the pod's uid can reach it
    keys.chmod(0o777)
    runner = PodRunner(host_mounts={str(keys): "/keys"})
    try:
        keygen = ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "521", "-N", "", "-f", "/keys/id"]
        made = await runner.run("lab-a", "keygen", {}, hardened_pod(image, command=keygen))
        assert made.exit_code == 0, made.output
        key = {name: base64.b64encode((keys / name).read_bytes()).decode() for name in ("id", "id.pub")}
    finally:
        await runner.close()
        shutil.rmtree(keys)

    run = RunRef("ssh-1", "lab-a", "uid-1")
    spec = parse_run_spec(
        {"task": "tasks/x", "image": image, "jobs": {"evaluate": {"trainJob": {"numNodes": 2}}}}
    )
    facts = TaskFacts(name="x", metric="m", cpu=1, memory_mb=1024, gpus=0, judged=True)
    trainjob = build_trainjob(run, spec, CONFIG, facts, JobRequest(Role.EVALUATE, "00001"))
    jobset = jobset_pods(trainjob, build_runtime(run, spec, CONFIG, facts))
    secret = next(o for o in jobset.objects if o["kind"] == "Secret")
    secret["data"] = {"ssh-privatekey": key["id"], "ssh-publickey": key["id.pub"]}
    launcher, node_pod = jobset.pods["launcher"][1]["spec"], jobset.pods["node"][1]["spec"]
    candidate = next(c for c in launcher["containers"] if c["name"] == "candidate")
    (sshd,) = node_pod["containers"]
    done = {"name": "done", "mountPath": "/done"}
    candidate = candidate | {
        "command": ["python", "-c", SSH_CLIENT],
        "volumeMounts": candidate["volumeMounts"] + [done],
    }
    sshd = sshd | {
        "command": ["sh", "-c", UNTIL_DONE, "sh", *sshd["command"]],
        "volumeMounts": sshd["volumeMounts"] + [done],
    }
    mounted = {m["name"] for c in (candidate, sshd) for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in node_pod["volumes"] + launcher["volumes"] if v["name"] in mounted}
    pod = launcher | {
        "containers": [sshd, candidate],
        "volumes": [*volumes.values(), {"name": "done", "emptyDir": {}}],
    }
    runner = PodRunner(_Objects(jobset.objects))  # type: ignore[arg-type]
    try:
        result = await runner.run("lab-a", "ssh-launcher", {}, pod)
    finally:
        await runner.close()
    ran = {c.name: c for c in result.containers}
    assert ran["candidate"].exit_code == 0, result.output
    facts_seen = last_json(ran["candidate"].output)
    uid = candidate_uid(CONFIG, trainjob["metadata"]["name"])
    assert facts_seen["uid"] == ran["candidate"].uid == uid != ran["node"].uid == 65532
    code, said = facts_seen["without"]
    assert code == 255 and f"No user exists for uid {uid}" in said  # OpenSSH's ssh.c, before anything else
    code, out, said = facts_seen["with"]
    assert code == 0 and out == ["kubevolve", "65532"], said  # logged in as the node pod's sshd user
    code, out, said = facts_seen["mpirun"]
    assert code == 0 and out == ["kubevolve"], said  # the rank ran on the "node", as its user
