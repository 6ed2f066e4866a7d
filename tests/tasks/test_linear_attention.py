"""The linear_attention task: the folder and its baselines, the kernels, the static checks (causality,
sub-quadratic cost, interface) and the quick stage, in process and through the engine's sandboxed worker."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kubevolve.core.models import Stage
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.sdk.evaluator_kit import program_with_block
from tests.kit.paths import REPO
from tests.kit.task_checks import (
    assert_cognition_sections_cite_sources,
    load_module,
    run_quick_through_engine,
)

TASK_DIR = REPO / "tasks" / "linear_attention"
QUICK_RANGE = (0.2, 0.6)  # tasks/linear_attention/README.md: DeltaNet's quick stage (measured 0.3838)
BASELINES = ["linear_attention", "softmax_attention"]  # DeltaNet is initial.py itself


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one thread, as in the evaluation worker


@pytest.fixture(scope="module")
def evaluator():
    return load_module(TASK_DIR / "evaluate.py", "linear_attention_evaluate")


@pytest.fixture(scope="module")
def checks(evaluator):
    return sys.modules["mixer_checks"]


@pytest.fixture(scope="module")
def initial():
    return load_module(TASK_DIR / "initial.py", "linear_attention_initial")


def baseline(name: str):
    program = program_with_block(TASK_DIR, TASK_DIR / "baselines" / f"{name}.py")
    return load_module(program, f"la_baseline_{name}")


# ---- the folder ----------------------------------------------------------------------------------------
def test_task_folder_loads_and_baselines_are_valid_candidates():
    task = load_task(TASK_DIR)
    assert task.spec.metric == "mqar_accuracy" and task.spec.direction == "maximize"
    assert set(task.stage_names) == {"quick", "full"}
    assert task.spec.stages["full"].resources.gpus == 1
    assert task.spec.checks.required_names == ["TokenMixer"]
    for name in BASELINES:
        code = task.with_block((TASK_DIR / "baselines" / f"{name}.py").read_text())
        assert static_check(task, code, task.initial_code) is None, name


def test_cognition_sections_have_titles_and_sources():
    assert_cognition_sections_cite_sources(TASK_DIR)


# ---- kernels and data ----------------------------------------------------------------------------------
def test_chunked_kernels_match_their_recurrent_definitions(initial):
    torch.manual_seed(0)
    b, h, t, d = 2, 2, 45, 8
    q, v = torch.randn(b, h, t, d), torch.randn(b, h, t, d)
    k = initial.l2norm(torch.randn(b, h, t, d))
    beta = torch.rand(b, h, t)
    state, outs = torch.zeros(b, h, d, d), []
    for i in range(t):
        kt, vt, bt = k[:, :, i], v[:, :, i], beta[:, :, i, None]
        predicted = (state @ kt[..., None])[..., 0]
        state = state + (bt * (vt - predicted))[..., None] * kt[:, :, None, :]
        outs.append((state @ q[:, :, i, :, None])[..., 0])
    reference = torch.stack(outs, 2)
    for chunk in (1, 4, 16, 64):
        assert torch.allclose(initial.chunked_delta_rule(q, k, v, beta, chunk), reference, atol=1e-5), chunk
    qp, kp = F.elu(q) + 1, F.elu(k) + 1
    scores = (qp @ kp.transpose(-1, -2)).tril()
    linear = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)
    for chunk in (1, 7, 64):
        assert torch.allclose(initial.chunked_linear_attention(qp, kp, v, chunk), linear, atol=1e-5), chunk


def test_mqar_batches_ask_for_the_paired_values(evaluator):
    mqar = sys.modules["mqar"]
    inputs, targets = mqar.batch(8, 64, 8, 64, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (8, 64)
    for row in range(8):
        pairs = dict(zip(inputs[row, :16:2].tolist(), inputs[row, 1:16:2].tolist(), strict=True))
        asked = (targets[row] != mqar.IGNORE).nonzero()[:, 0].tolist()
        assert len(asked) == 8 and all(p >= 16 for p in asked)
        assert all(targets[row, p] == pairs[int(inputs[row, p])] == inputs[row, p + 1] for p in asked)
    again = mqar.batch(8, 64, 8, 64, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs)
    grammar = sys.modules["grammar"]
    assert torch.equal(grammar.corpus(500, seed=1), grammar.corpus(500, seed=1))


# ---- static checks ------------------------------------------------------------------------------------
class _Attention(nn.Module):
    causal = True

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def split(self, x):
        b, t, d = x.shape
        return [z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1)]

    def merge(self, o):
        b, h, t, d = o.shape
        return self.out(o.transpose(1, 2).reshape(b, t, h * d))

    def forward(self, x):
        q, k, v = self.split(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=self.causal))


class _Bidirectional(_Attention):
    causal = False


class _ManualQuadratic(_Attention):
    """Causal softmax attention written with broadcasting instead of a matmul or an attention kernel."""

    def forward(self, x):
        q, k, v = self.split(x)
        t = x.shape[1]
        scores = (q[:, :, :, None, :] * k[:, :, None, :, :]).sum(-1)
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -1e9)
        return self.merge(scores.softmax(-1) @ v)


class _LookAhead(nn.Module):
    """A short convolution padded on both sides: each output also sees the next token."""

    def __init__(self, dim, heads):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class _TimeBatchNorm(nn.Module):
    """Causal in eval mode, but in training mode BatchNorm's statistics mix all positions."""

    def __init__(self, dim, heads):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x):
        return self.norm(self.proj(x).transpose(1, 2)).transpose(1, 2)


def test_the_linear_baselines_pass_the_checks(checks, initial):
    for mixer in (initial.TokenMixer, baseline("linear_attention").TokenMixer):
        report = checks.run_checks(mixer, 64, 2)
        assert report.cost_exponent < 1.2 and 0 < report.parameters <= 8 * 64 * 64
        assert "causal" in report.summary


@pytest.mark.parametrize(
    "mixer",
    [baseline("softmax_attention").TokenMixer, _Attention, _ManualQuadratic],
    ids=["baseline", "sdpa", "manual"],
)
def test_a_quadratic_layer_is_rejected(checks, mixer):
    with pytest.raises(checks.CheckFailed, match=r"quadratic cost: the layer's work grows as T\^1\.[6-9]"):
        checks.run_checks(mixer, 64, 2)


@pytest.mark.parametrize(
    ("mixer", "message"),
    [
        (
            _Bidirectional,
            "not causal: changing the tokens from position 1 on changed the output at position 0",
        ),
        (_LookAhead, "not causal: changing the tokens from position 1 on changed the output at position 0"),
        (_TimeBatchNorm, "not causal: in training mode the outputs before position 24 depend on the token"),
    ],
    ids=["bidirectional", "look-ahead-conv", "batchnorm-over-time"],
)
def test_a_non_causal_layer_is_rejected(checks, mixer, message):
    with pytest.raises(checks.CheckFailed, match=message):
        checks.run_checks(mixer, 64, 2)


class _Counter(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.proj(x) * self.calls


@pytest.mark.parametrize(
    ("mixer", "message"),
    [
        (lambda dim, heads: nn.Linear(dim, 2 * dim), r"forward maps \(2, 1, 64\) to \(2, 1, 128\)"),
        (lambda dim, heads: nn.Identity(), "the mixer has no parameters"),
        (lambda dim, heads: nn.Linear(dim, 9 * dim * dim), "over the cap of 8 \\* dim\\^2 = 32768"),
        (_Counter, "two calls on the same input gave different outputs"),
        ("not a class", "TokenMixer must be an nn.Module subclass"),
    ],
    ids=["shape", "no-parameters", "too-large", "stateful", "not-a-module"],
)
def test_interface_violations_are_named(checks, mixer, message):
    if callable(mixer) and not isinstance(mixer, type):
        factory = mixer
        mixer = type("Built", (nn.Module,), {"__new__": lambda cls, dim, heads: factory(dim, heads)})
    with pytest.raises(checks.CheckFailed, match=message):
        checks.run_checks(mixer, 64, 2)


# ---- stages ---------------------------------------------------------------------------------------------
def test_quick_stage_through_the_engine_is_in_range_and_reproducible(evaluator, tmp_path):
    node = run_quick_through_engine(TASK_DIR, tmp_path, run_id="la", task="linear_attention")
    assert node.stage is Stage.EVALUATED, node.error + node.log_tail
    metrics = node.metrics
    low, high = QUICK_RANGE
    assert low < metrics["mqar_accuracy"] < high
    assert all(type(v) is float and math.isfinite(v) for v in metrics.values())
    per_length = [metrics[f"mqar_acc_len{n}"] for n in (64, 128, 256)]
    assert metrics["mqar_accuracy"] == pytest.approx(sum(per_length) / 3)
    assert (
        metrics["cost_exponent"] < 1.2 and 0.5 < metrics["lm_loss"] < 2.0 and metrics["tokens_per_second"] > 0
    )
    assert {"checks", "mqar_accuracy", "mqar_curve", "lm_curve"} <= set(node.artifacts)
    assert "length  pairs  accuracy" in node.artifacts["mqar_accuracy"]
    # the same seed in this process (no sandbox, another process) gives the same score, bit for bit
    again = evaluator.evaluate(str(TASK_DIR / "initial.py"), "quick")
    assert again["mqar_accuracy"] == metrics["mqar_accuracy"]
    assert again["lm_loss"] == metrics["lm_loss"]


def test_a_non_causal_candidate_fails_its_quick_stage_in_the_engine(tmp_path):
    task_dir = tmp_path / "task"
    shutil.copytree(TASK_DIR, task_dir, ignore=shutil.ignore_patterns("__pycache__"))
    code = (TASK_DIR / "initial.py").read_text()
    code = code.replace(
        "        return self.out_proj(merge_heads(out))\n",
        "        return self.out_proj(merge_heads(out) + x.mean(dim=1, keepdim=True))\n",
    )
    (task_dir / "initial.py").write_text(code)
    node = run_quick_through_engine(task_dir, tmp_path, run_id="la", task="linear_attention")
    assert node.stage is Stage.FAILED_QUICK
    assert (
        "quick stage: CheckFailed: not causal: changing the tokens from position 1 on changed" in node.error
    )


def test_full_stage_refuses_to_run_without_a_gpu(evaluator):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full stage would really train")
    with pytest.raises(RuntimeError, match="the full stage is sized for a GPU and none is visible"):
        evaluator.evaluate(str(TASK_DIR / "initial.py"), "full")


def test_unknown_stage_is_an_error(evaluator):
    with pytest.raises(ValueError, match="unknown stage"):
        evaluator.evaluate(str(TASK_DIR / "initial.py"), "medium")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun", "mpirun"])
def test_the_multi_gpu_rank_entry_runs_two_deepspeed_ranks_on_cpu(tmp_path, launcher, monkeypatch):
    """What `evaluate` launches on a node with several GPUs, on two CPU processes: the launcher starts two
    ranks of evaluate.py --rank-entry, each trains with ZeRO-2 over gloo, rank 0 writes the metrics."""
    pytest.importorskip("deepspeed")
    from kubevolve.sdk.training.distributed import free_port
    from kubevolve.sdk.training.launcher import launch_command, run_launched

    result = tmp_path / "metrics.json"
    override = json.dumps({"mqar": {"steps": 20, "evalEvery": 10}, "lm": {"steps": 10}})
    entry = [str(TASK_DIR / "evaluate.py"), "--stage", "quick", "--rank-entry", "--result", str(result)]
    hostfile = None
    if launcher == "mpirun":  # what a multi-node TrainJob uses, here with one host in the hostfile
        if shutil.which("mpirun") is None:
            pytest.skip("OpenMPI's mpirun is not installed (apt-get install openmpi-bin)")
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("localhost slots=2\n")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        monkeypatch.setenv("OMPI_MCA_plm", "isolated")
    command = launch_command(
        [*entry, "--override", override],
        gpus=2,
        launcher=launcher,
        hostfile=hostfile and str(hostfile),
        master_port=free_port(),
    )
    metrics = run_launched(command, result, timeout=400, cwd=tmp_path)
    assert 0.0 <= metrics["mqar_accuracy"] <= 1.0 and math.isfinite(metrics["lm_loss"])
    assert metrics["artifacts"]["mqar_curve"].startswith("MQAR training")
    assert metrics["artifacts"]["mqar_curve"].splitlines()[-1].split()[0] == "20"  # the step budget
