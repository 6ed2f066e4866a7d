"""The linear_attention task: the folder and its baselines, the kernels, the sandbox's static checks
(causality, sub-quadratic cost, interface), the judge's own probes (causality of a fresh mixer and of the
trained models' scored outputs, the timed cost exponent), candidates that forge their score, and the quick
stage, in process (no boundary) and through the engine (the judge in its process, the training in the sandbox)."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.sdk.evaluator_kit import program_with_block
from kubevolve.sdk.judging import SEED_VARIABLE, CandidateError, LocalJudge, in_process_candidate
from kubevolve.sdk.training import load_settings
from kubevolve.sdk.training.settings import merge
from tests.kit.paths import REPO
from tests.kit.task_checks import (
    assert_cognition_sections_cite_sources,
    evaluate_through_engine,
    load_module,
    run_quick_through_engine,
    task_copy_with_settings,
)

TASK_DIR = REPO / "tasks" / "linear_attention"
QUICK_RANGE = (0.2, 0.6)  # tasks/linear_attention/README.md: DeltaNet's quick stage (measured 0.3838)
BASELINES = ["linear_attention", "softmax_attention"]  # DeltaNet is initial.py itself
TINY = {
    "mqar": {"steps": 20, "evalEvery": 10, "evalSequences": 32},
    "lm": {"steps": 10, "heldOutTokens": 4096},
}
FORGED_EVAL = {"mqar": {"evalSequences": 128}}  # more rows than the judge's twins (32)
TASK_MODULES = ["mqar", "grammar", "backbone", "mixer_checks", "trainer", "judge_probes"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one thread, as in the evaluation worker


@pytest.fixture(scope="module")
def evaluator():
    return load_module(TASK_DIR / "evaluate.py", "linear_attention_evaluate")


@pytest.fixture(scope="module")
def checks(evaluator):
    return importlib.import_module(
        "mixer_checks"
    )  # the sandbox's first filter (evaluate.py put the folder on the path)


@pytest.fixture(scope="module")
def probes(evaluator):
    return sys.modules["judge_probes"]


@pytest.fixture
def restored_task_modules(evaluator):
    """A forger run in this process (no boundary) patches the task's modules, which the test session shares:
    put their attributes back afterwards."""
    saved = {name: dict(vars(sys.modules[name])) for name in TASK_MODULES if name in sys.modules}
    yield
    for name, attributes in saved.items():
        vars(sys.modules[name]).update(attributes)


def tiny_settings() -> dict:
    return merge(load_settings(TASK_DIR / "training.yaml", "quick"), TINY)


def program_with(tmp_path: Path, block: str, name: str = "candidate.py") -> str:
    """The initial program with its EVOLVE-BLOCK replaced by `block`."""
    path = tmp_path / name
    path.write_text(load_task(TASK_DIR).with_block(block + "\n\n"))
    return str(path)


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
    assert task.runner_path == TASK_DIR / "run.py"  # judged: the training runs in the sandbox
    assert {"run", "trainer", "judge_probes", "evaluate"} <= set(task.spec.checks.forbidden_imports)
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


# ---- the judge's probes (in this process: the judge's logic) --------------------------------------------
BIDIRECTIONAL = """
class TokenMixer(nn.Module):
    \"\"\"Softmax attention over the whole sequence: every output sees every token, later ones included.\"\"\"

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(z, self.heads) for z in self.qkv(x).chunk(3, -1))
        return self.out(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=False)))
"""

PEEK = """
class TokenMixer(nn.Module):
    \"\"\"Linear in cost, but each output also reads the next token (in MQAR, the value it must recall).\"\"\"

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.now = nn.Linear(dim, dim)
        self.ahead = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        following = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return self.now(x) + self.ahead(following)
"""


@pytest.mark.parametrize("block", [BIDIRECTIONAL, PEEK], ids=["bidirectional", "peek-at-next-token"])
def test_the_judges_causality_probe_refuses_a_mixer_that_reads_the_future(probes, tmp_path, block):
    candidate = in_process_candidate(TASK_DIR, program_with(tmp_path, block))
    with pytest.raises(
        probes.ProbeFailed,
        match="not causal \\(the judge's probe\\): changing the tokens from position 1 on changed the output at position 0",
    ):
        probes.causality_probe(candidate, tiny_settings(), seed=3)
    honest = in_process_candidate(TASK_DIR, TASK_DIR / "initial.py")
    assert probes.causality_probe(honest, tiny_settings(), seed=3).startswith("causal")


def test_the_judges_timing_probe_refuses_softmax_attention_and_passes_deltanet(probes, tmp_path):
    """Timed on this (busy, shared) machine; the margins are in README.md ("The judge's probes")."""
    deltanet = in_process_candidate(TASK_DIR, TASK_DIR / "initial.py")
    exponent, summary = probes.time_probe(deltanet, tiny_settings(), seed=4)
    assert exponent < probes.MAX_TIME_EXPONENT and "time grows as T^" in summary
    softmax = in_process_candidate(
        TASK_DIR, program_with_block(TASK_DIR, TASK_DIR / "baselines" / "softmax_attention.py", tmp_path)
    )
    with pytest.raises(
        probes.ProbeFailed,
        match=r"quadratic cost: timing \(the judge's clock.*time grows as T\^(1\.[7-9]|2\.)",
    ):
        probes.time_probe(softmax, tiny_settings(), seed=4)


def test_the_judge_checks_the_trained_models_outputs_for_causality(evaluator, probes, tmp_path):
    """A layer that reads the next token, with the sandbox's checks and the fresh-mixer probe skipped: the twin
    rows among the scored held-out inputs catch it on the very logits that would have been scored."""
    with pytest.raises(
        probes.ProbeFailed,
        match="not causal \\(the judge's check on the trained model's outputs\\): held-out MQAR sequence of length 64, row",
    ):
        evaluator.run_experiment(program_with(tmp_path, PEEK), tiny_settings(), check=False)


class _Replies:
    """A Candidate whose runner answers with the replies given (what a hostile runner may send)."""

    seconds = 0.01

    def __init__(self, *replies):
        self.replies = list(replies)

    def request(self, request, *, timeout=None, max_bytes=None):
        return self.replies.pop(0)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            {"outputs": np.zeros((12, 48, 63), dtype=np.float32)},
            r"expected a float array of shape \(12, 48, 64\), got float32 \(12, 48, 63\)",
        ),
        ({"outputs": np.zeros((12, 48, 64), dtype=np.int64)}, "expected a float array"),
        (
            {"outputs": np.full((12, 48, 64), np.nan, dtype=np.float32)},
            r"non-finite value at index \(0, 0, 0\)",
        ),
        ({"out": 1}, "the runner must send {'outputs': array}"),
        ([1, 2], "the runner must send {'outputs': array}"),
    ],
    ids=["shape", "dtype", "nan", "key", "not-a-dict"],
)
def test_malformed_replies_are_refused_with_a_message(probes, reply, message):
    with pytest.raises(ValueError, match=message):
        probes.causality_probe(_Replies(reply), tiny_settings(), seed=0)


def test_malformed_logits_are_refused(evaluator):
    rows = torch.zeros(3, 8, dtype=torch.long)
    for reply, message in [
        (
            {"logits": np.zeros((3, 8, 10), dtype=np.float32)},
            r"the mqar model's logits: expected a float array of shape \(3, 8, 64\)",
        ),
        (
            {"logits": np.full((3, 8, 64), np.inf, dtype=np.float32)},
            "the mqar model's logits: non-finite value",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            evaluator.predict(_Replies(reply), "mqar", rows, None, 64, torch.Generator().manual_seed(0))


class _Recorder:
    """A Candidate that records every request before passing it on."""

    def __init__(self, candidate):
        self.candidate, self.requests = candidate, []

    @property
    def seconds(self):
        return self.candidate.seconds

    def request(self, request, *, timeout=None, max_bytes=None):
        self.requests.append(request)
        return self.candidate.request(request, timeout=timeout, max_bytes=max_bytes)


def test_the_requests_do_not_reveal_the_held_out_seed(evaluator, monkeypatch):
    """The probes send the runner seeds of their own; they are derived one way from the judge's, so the runner
    cannot work back to the seed of the held-out data (an affine derivation, inverted, gave it exactly)."""
    secret = 987_654_321_123
    monkeypatch.setenv(SEED_VARIABLE, str(secret))
    recorder = _Recorder(in_process_candidate(TASK_DIR, TASK_DIR / "initial.py"))
    evaluator.judge_settings(recorder, tiny_settings())
    sent = {request["seed"] for request in recorder.requests if "seed" in request}
    assert sent and secret not in sent
    inverse = pow(1_000_003, -1, 1 << 63)
    assert all((seed - salt) * inverse % (1 << 63) != secret for seed in sent for salt in (1, 2, 3))
    assert not any(secret in np.asarray(r.get("inputs", [])) for r in recorder.requests)


# ---- candidates forging their score ---------------------------------------------------------------------
# In one process with the judge each of these would be scored as it claims; across the boundary it patches
# only its own process, and the judge scores what the trained model answers on inputs from a secret seed.
PATCHER = """
import sys as _sys

for _module in list(_sys.modules.values()):  # the task's modules, here and wherever the judge might be
    if "linear_attention" in str(getattr(_module, "__file__", "")) and callable(getattr(_module, "accuracy", None)):
        _module.accuracy = lambda *args, **kwargs: 1.0
"""

# regenerates the held-out MQAR sequences with the published seed (evaluate.py's EVAL_SEED), recognises each
# sequence sent by its key-value pairs and answers every query with its value, the twins' included, so the
# judge's causality check sees nothing amiss
REGENERATOR = """
import sys as _sys

import mqar as _mqar
import numpy as _np

_SETTINGS = {}


def _known(length, settings):
    generator = torch.Generator().manual_seed(12345)
    cfg = settings["mqar"]
    for size, pairs in cfg["eval"]:
        inputs, targets = _mqar.batch(cfg["evalSequences"], size, pairs, cfg["vocab"], generator)
        if size == length:
            return inputs.numpy(), targets.numpy(), 2 * pairs
    return None


def _forged_predict(honest):
    def predict(request):
        reply = honest(request)
        known = _known(request["inputs"].shape[1], _SETTINGS) if request.get("task") == "mqar" else None
        if known is None:
            return reply
        inputs, targets, context = known
        for row, positions in enumerate(request["positions"]):
            match = _np.flatnonzero((inputs[:, :context] == request["inputs"][row, :context]).all(1))
            for j, position in enumerate(positions):
                if len(match) and targets[match[0], position] >= 0:
                    reply["logits"][row, j] = -100.0
                    reply["logits"][row, j, targets[match[0], position]] = 100.0
        return reply

    return predict


def _remembering(honest):
    def train(program, settings):
        _SETTINGS.update(settings)
        return honest(program, settings)

    return train


for _module in list(_sys.modules.values()):
    if callable(getattr(_module, "predict", None)) and hasattr(_module, "_trained"):
        _module.predict = _forged_predict(_module.predict)
        _module.train = _remembering(_module.train)
"""

# reads each query's answer from the token after it, the future (trained MQAR sequences carry it there), and
# answers honestly wherever two rows of a request share their key-value pairs (a twin and its original), so
# the judge's twin check compares honest logits only
PEEKER = """
import sys as _sys

import numpy as _np


def _peeking(honest):
    def predict(request):
        reply = honest(request)
        if request.get("task") != "mqar":
            return reply
        inputs = request["inputs"]
        _, first, counts = _np.unique(inputs[:, :16], axis=0, return_inverse=True, return_counts=True)
        for row, positions in enumerate(request["positions"]):
            if counts[first.reshape(-1)[row]] > 1:
                continue  # a twin or the row it was copied from: stay causal
            for j, position in enumerate(positions):
                reply["logits"][row, j] = -100.0
                reply["logits"][row, j, inputs[row, position + 1]] = 100.0
        return reply

    return predict


for _module in list(_sys.modules.values()):
    if callable(getattr(_module, "predict", None)) and hasattr(_module, "_trained"):
        _module.predict = _peeking(_module.predict)
"""

DELTANET = load_task(TASK_DIR).initial_code.split("# EVOLVE-BLOCK-START\n")[1].split("# EVOLVE-BLOCK-END")[0]


@pytest.mark.usefixtures("restored_task_modules")
@pytest.mark.parametrize(
    "forger", [PATCHER, REGENERATOR], ids=["patches-accuracy", "regenerates-held-out-data"]
)
def test_a_forger_scores_perfectly_without_the_boundary(evaluator, tmp_path, monkeypatch, forger):
    """The attacks are real: with the judge in the candidate's process (LocalJudge, the documented seed)
    each forger is scored 1.0 after 20 steps of training, where DeltaNet itself reaches about 0.04."""
    monkeypatch.delenv(SEED_VARIABLE, raising=False)
    task = load_task(TASK_DIR)
    code = task.with_block(forger + DELTANET)
    assert static_check(task, code, task.initial_code) is not None  # it imports sys: never run for real
    path = tmp_path / "forger.py"
    path.write_text(code)
    assert evaluator.run_experiment(str(path), tiny_settings())["mqar_accuracy"] == 1.0


@pytest.mark.usefixtures("restored_task_modules")
def test_a_candidate_reading_the_future_gains_nothing(evaluator, tmp_path, monkeypatch):
    """PEEKER evades the twin check (it stays causal on every row it sees twice). On sequences that carry each
    answer after its query, as training sequences do, it scores near 1 on the rows it forges; the judge's
    scored sequences hold a filler there, so it scores nothing."""
    settings = merge(tiny_settings(), FORGED_EVAL)  # 96 of the 128 rows have no twin
    path = program_with(tmp_path, PEEKER + DELTANET)
    monkeypatch.setattr(evaluator, "hide_answers", lambda inputs, queries: inputs)
    visible = evaluator.run_experiment(path, settings, check=False)
    monkeypatch.undo()
    hidden = evaluator.run_experiment(path, settings, check=False)
    assert visible["mqar_accuracy"] > 0.7, visible["artifacts"]["probes"]
    assert hidden["mqar_accuracy"] < 0.05


def test_a_candidate_forging_mqar_accuracy_is_caught(tmp_path, monkeypatch):
    """The three forgers at once, through the engine: the judge's accuracy is computed in its own process, on
    sequences drawn from the run's secret seed that hold no answer after a query, so the candidate scores
    less than DeltaNet at 20 steps (about 0.04)."""
    monkeypatch.delenv(SEED_VARIABLE, raising=False)  # the engine's seed: secret, drawn for the run
    task_dir = task_copy_with_settings(TASK_DIR, tmp_path, "quick", merge(TINY, FORGED_EVAL))
    code = load_task(task_dir).with_block(PATCHER + REGENERATOR + PEEKER + DELTANET)
    node = evaluate_through_engine(task_dir, code, tmp_path)
    assert node.metrics["mqar_accuracy"] < 0.05, node.error + node.log_tail
    assert node.failure is FailureKind.EARLY_REJECTION, node.error  # the stage's rejectBelow: 0.05


SKIP_SANDBOX_CHECKS = """
import sys as _sys


class _Report:
    parameters, cost_exponent, summary = 1, 1.0, "interface ok; causal; cost exponent 1.00"


for _module in list(_sys.modules.values()):
    if callable(getattr(_module, "run_checks", None)):
        _module.run_checks = lambda *args, **kwargs: _Report()
"""

ANSWER_PROBES_CAUSALLY = """
def _identity(program, settings, request):
    return {"outputs": request["inputs"]}


for _module in list(_sys.modules.values()):
    if callable(getattr(_module, "mixer_outputs", None)):
        _module.mixer_outputs = _identity
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            SKIP_SANDBOX_CHECKS + BIDIRECTIONAL,
            "quick stage: ProbeFailed: not causal (the judge's probe): changing the tokens from position 1 on",
        ),
        (
            SKIP_SANDBOX_CHECKS + "\n" + (TASK_DIR / "baselines" / "softmax_attention.py").read_text(),
            "quick stage: ProbeFailed: quadratic cost: ",
        ),
        (
            SKIP_SANDBOX_CHECKS + ANSWER_PROBES_CAUSALLY + PEEK,
            "quick stage: ProbeFailed: not causal (the judge's check on the trained model's outputs): held-out MQAR sequence of length",
        ),
    ],
    ids=["bidirectional", "softmax", "peek-that-fakes-the-probe"],
)
def test_the_probes_hold_through_the_engine_when_the_sandbox_checks_are_patched_out(tmp_path, block, message):
    task_dir = task_copy_with_settings(TASK_DIR, tmp_path, "quick", TINY)
    node = evaluate_through_engine(task_dir, load_task(task_dir).with_block(block), tmp_path)
    assert node.stage is Stage.FAILED_QUICK, node.metrics
    assert message in node.error, node.error


# ---- stages ---------------------------------------------------------------------------------------------
def test_quick_stage_through_the_engine_is_in_range_and_reproducible(tmp_path, monkeypatch):
    # the engine draws the held-out data from a secret seed per run; set here to the documented one
    monkeypatch.setenv(SEED_VARIABLE, str(load_module(TASK_DIR / "evaluate.py", "la_seed").EVAL_SEED))
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
    assert metrics["time_exponent"] < 1.7 and metrics["train_seconds"] > metrics["eval_seconds"] > 0
    assert {"checks", "probes", "mqar_accuracy", "mqar_curve", "lm_curve"} <= set(node.artifacts)
    assert "length  pairs  accuracy" in node.artifacts["mqar_accuracy"]
    assert "logits before each of 128 cuts are unchanged" in node.artifacts["probes"]
    # the same seeds in this process (no sandbox, another process) give the same score, bit for bit
    monkeypatch.delenv(SEED_VARIABLE)
    again = LocalJudge(TASK_DIR).evaluate(str(TASK_DIR / "initial.py"), "quick")
    assert again["mqar_accuracy"] == metrics["mqar_accuracy"]
    assert again["lm_loss"] == metrics["lm_loss"]


NO_MIXING = """
class TokenMixer(nn.Module):
    \"\"\"Each position on its own: causal and linear, but nothing moves between tokens, so nothing is recalled.\"\"\"

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
"""


def test_a_layer_that_learns_nothing_is_rejected_at_the_quick_stage(tmp_path):
    """It passes every check and probe; the judge's accuracy is chance (1/32), under the quick stage's
    rejectBelow (0.05), so it never reaches the full stage."""
    task_dir = task_copy_with_settings(TASK_DIR, tmp_path, "quick", TINY)
    node = evaluate_through_engine(
        task_dir, load_task(task_dir).with_block(NO_MIXING), tmp_path, stages=("quick", "full")
    )
    assert node.failure is FailureKind.EARLY_REJECTION, node.error
    assert node.metrics["mqar_accuracy"] < 0.05 and "full" not in node.timings


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


def test_full_stage_refuses_to_run_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full stage would really train")
    with pytest.raises(CandidateError, match="the full stage is sized for a GPU and none is visible"):
        LocalJudge(TASK_DIR).evaluate(str(TASK_DIR / "initial.py"), "full")


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="unknown stage"):
        LocalJudge(TASK_DIR).evaluate(str(TASK_DIR / "initial.py"), "medium")


def test_training_across_nodes_in_the_judged_sandbox_stops_with_a_message(tmp_path, monkeypatch):
    """A multi-node TrainJob's launcher pod (KUBEVOLVE_NUM_NODES): the ranks would meet over TCP, which the
    candidate's sandbox refuses at a stage without `network: ranks` (the quick stage), so the runner says so,
    naming the setting, instead of training on one node alone or waiting at a rendezvous (README.md, "Several
    GPUs or nodes")."""
    task_dir = task_copy_with_settings(TASK_DIR, tmp_path, "quick", merge(TINY, {"launcher": "deepspeed"}))
    monkeypatch.setenv("KUBEVOLVE_NUM_NODES", "2")  # what the operator sets in a TrainJob
    node = evaluate_through_engine(task_dir, load_task(task_dir).initial_code, tmp_path)
    assert node.stage is Stage.FAILED_QUICK, node.metrics
    assert "training on 2 nodes needs its processes to meet over TCP" in node.error, node.error
    assert "`stages.<stage>.network: ranks`" in node.error, node.error  # the setting that lets them


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun", "mpirun"])
def test_the_multi_gpu_rank_entry_runs_two_deepspeed_ranks_on_cpu(evaluator, tmp_path, launcher, monkeypatch):
    """What the runner launches on a node with several GPUs, on two CPU processes: the launcher starts two
    ranks of run.py --rank-entry, each trains with ZeRO-2 over gloo, rank 0 saves both models and their
    curves; the runner loads them and answers the judge's predict requests with them."""
    pytest.importorskip("deepspeed")
    from kubevolve.sdk.training.distributed import free_port
    from kubevolve.sdk.training.launcher import launch_command, run_launched

    runner = load_module(TASK_DIR / "run.py", "la_runner_ranks")
    settings = tiny_settings()
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    shutil.copy(TASK_DIR / "initial.py", tmp_path / "program.py")
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
        runner.rank_entry(str(tmp_path), "cpu"),
        gpus=2,
        launcher=launcher,
        hostfile=hostfile and str(hostfile),
        master_port=free_port(),
    )
    info = run_launched(command, tmp_path / "result.json", timeout=400, cwd=tmp_path)
    assert info["world_size"] == 2 and info["mqar"]["curve"].startswith("MQAR training")
    assert info["mqar"]["curve"].splitlines()[-1].split()[0] == "20"  # the step budget
    mixer = load_module(TASK_DIR / "initial.py", "la_initial_ranks").TokenMixer
    trained = runner.load_trained(mixer, settings, tmp_path, info)
    runner._trained.update(trained)
    inputs = torch.randint(0, settings["mqar"]["vocab"], (3, 64)).numpy()
    logits = runner.predict({"task": "mqar", "inputs": inputs, "positions": np.array([[5, 9]] * 3)})["logits"]
    assert logits.shape == (3, 2, settings["mqar"]["vocab"]) and np.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
def test_a_rank_on_another_node_trains_from_what_the_launcher_host_sends(evaluator, tmp_path, monkeypatch):
    """Two nodes laid out as a TrainJob lays them out: Trainer's hostfile names the node pods before the
    launcher, so rank 0 (and the rendezvous) is on the other node, which sees nothing of the launcher's
    sandbox (tests/kit/hosts_mpirun.py: another /tmp, the launcher's folder hidden). That rank takes the
    program and settings from the rank on the launcher's host, the two train together, and the models and
    curves come back to the runner, which answers the judge's predict requests with them."""
    pytest.importorskip("deepspeed")
    from kubevolve.sdk.evaluator_kit import load_program
    from kubevolve.sdk.training.distributed import free_port

    runner = load_module(TASK_DIR / "run.py", "la_runner_nodes")
    mpirun = tmp_path / "bin" / "mpirun"
    mpirun.parent.mkdir()
    mpirun.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests/kit/hosts_mpirun.py"} "$@"\n')
    mpirun.chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")  # the node pod, then the launcher
    sandbox = tmp_path / "sandbox"  # the launcher's candidate: its program and working directory
    sandbox.mkdir()
    shutil.copy(TASK_DIR / "initial.py", sandbox / "candidate.py")
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("PATH", f"{mpirun.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("KUBEVOLVE_NUM_NODES", "2")
    monkeypatch.setenv("KUBEVOLVE_HOSTFILE", str(hostfile))
    monkeypatch.setenv("HOSTS_MPIRUN_HOME", "127.0.0.2")
    monkeypatch.setenv("HOSTS_MPIRUN_HIDE", str(sandbox))
    monkeypatch.setenv("HOSTS_MPIRUN_PORT", str(free_port()))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    program = load_program(sandbox / "candidate.py", required=["TokenMixer"])
    settings = merge(tiny_settings(), {"launcher": "deepspeed"})

    info = runner.train(program, settings)
    assert info["world_size"] == 2 and info["mqar"]["curve"].startswith("MQAR training")
    assert info["mqar"]["curve"].splitlines()[-1].split()[0] == "20"  # the step budget
    [out] = sandbox.glob("kubevolve-ranks-*")  # written by the rank on this host, read here
    assert {p.name for p in out.iterdir()} == {"program.py", "settings.json", "models.pt", "result.json"}
    inputs = torch.randint(0, settings["mqar"]["vocab"], (3, 64)).numpy()
    logits = runner.predict({"task": "mqar", "inputs": inputs, "positions": np.array([[5, 9]] * 3)})["logits"]
    assert logits.shape == (3, 2, settings["mqar"]["vocab"]) and np.isfinite(logits).all()
