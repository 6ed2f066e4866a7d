"""The rl_algorithm task: the environment, the checks on what the evolved objective returns, and the quick
stage of the GRPO baseline, in process and through the engine (training in the sandbox, the judge measuring
the policies it sends back)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from kubevolve.core.models import Stage
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.sdk.evaluator_kit import program_with_block
from kubevolve.sdk.judging import SEED_VARIABLE, CandidateError, LocalJudge
from kubevolve.sdk.training import TrainingDiverged, load_settings
from kubevolve.sdk.training.settings import merge
from tests.kit.paths import REPO
from tests.kit.task_checks import (
    assert_cognition_sections_cite_sources,
    load_module,
    run_quick_through_engine,
)

TASK_DIR = REPO / "tasks" / "rl_algorithm"
QUICK_RANGE = (0.6, 0.95)  # tasks/rl_algorithm/README.md: GRPO's quick stage (measured 0.800)
TINY = {
    "seeds": [0],
    "warmStart": {"steps": 3},
    "iterations": 3,
    "evalEvery": 1,
    "heldOut": 50,
    "curveProblems": 20,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one thread, as in the evaluation worker


@pytest.fixture(scope="module")
def evaluator():
    return load_module(TASK_DIR / "evaluate.py", "rl_algorithm_evaluate")


def tiny_settings(**override):
    return merge(merge(load_settings(TASK_DIR / "training.yaml", "quick"), TINY), override)


def program_with(tmp_path: Path, block: str) -> str:
    """The initial program with its EVOLVE-BLOCK replaced by `block`."""
    path = tmp_path / "candidate.py"
    path.write_text(load_task(TASK_DIR).with_block(block + "\n\n"))
    return str(path)


def test_task_folder_loads_and_baselines_are_valid_candidates():
    task = load_task(TASK_DIR)
    assert task.spec.metric == "solve_rate" and task.spec.direction == "maximize"
    assert set(task.spec.checks.required_names) == {"compute_advantages", "policy_loss"}
    for path in (TASK_DIR / "baselines").glob("*.py"):  # GRPO is initial.py itself
        assert static_check(task, task.with_block(path.read_text()), task.initial_code) is None, path.name
    assert_cognition_sections_cite_sources(TASK_DIR)


def test_the_reward_is_an_exact_check_of_the_sum(evaluator):
    arithmetic = sys.modules["arithmetic"]
    problems = torch.tensor([[47, 85], [10, 20], [99, 99]])
    answers = arithmetic.answers(problems, 2)
    assert answers.tolist() == [[2, 3, 1], [0, 3, 0], [8, 9, 1]]  # 132, 30, 198, least significant first
    assert arithmetic.prompts(problems, 2)[0].tolist() == [7, 4, 5, 8]
    wrong = answers.clone()
    wrong[1, 2] = 1
    assert arithmetic.reward(wrong, problems, 2).tolist() == [1.0, 0.0, 1.0]
    assert arithmetic.needs_carry(problems, 2).tolist() == [True, False, True]


def test_grpo_advantages_are_group_normalised(tmp_path):
    program = load_module(TASK_DIR / "initial.py", "rl_initial")
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    advantages = program.compute_advantages(rewards)
    assert advantages[0].tolist() == pytest.approx([0.866, -0.866, -0.866, 0.866], abs=1e-3)
    assert advantages[1].tolist() == [0.0] * 4  # a group with one outcome teaches nothing
    rloo = load_module(program_with_block(TASK_DIR, TASK_DIR / "baselines" / "rloo.py", tmp_path), "rl_rloo")
    assert rloo.compute_advantages(rewards)[0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


@pytest.mark.parametrize(
    ("block", "error", "message"),
    [
        (
            "def compute_advantages(rewards):\n    return rewards.flatten()\n\n\ndef policy_loss(batch):\n    return batch.logp.mean()",
            ValueError,
            r"compute_advantages returned shape \(256,\), expected \(32, 8\)",
        ),
        (
            "def compute_advantages(rewards):\n    return rewards / rewards.sum() * float('nan')\n\n\ndef policy_loss(batch):\n    return batch.logp.mean()",
            ValueError,
            "compute_advantages returned non-finite advantages",
        ),
        (
            "def compute_advantages(rewards):\n    return rewards\n\n\ndef policy_loss(batch):\n    return batch.logp.sum(dim=1)",
            ValueError,
            r"policy_loss must return a scalar tensor, got \(256,\)",
        ),
        (
            "def compute_advantages(rewards):\n    return rewards\n\n\ndef policy_loss(batch):\n    return (batch.advantages * 0.0).sum()",
            ValueError,
            "policy_loss returned a loss without a gradient",
        ),
        (
            "def compute_advantages(rewards):\n    return rewards\n\n\ndef policy_loss(batch):\n    return batch.logp.mean() * float('inf')",
            TrainingDiverged,
            "training diverged: the loss is -?inf at step 0",
        ),
    ],
    ids=["advantage-shape", "advantage-nan", "loss-shape", "loss-no-grad", "loss-inf"],
)
def test_broken_objectives_fail_with_a_specific_message(evaluator, tmp_path, block, error, message):
    with pytest.raises(CandidateError, match=message) as raised:  # raised in the runner, the candidate's side
        evaluator.run_experiment(program_with(tmp_path, block), tiny_settings())
    assert error.__name__ in raised.value.exception_classes


def test_a_tiny_run_reports_every_metric_and_is_seeded(evaluator):
    first = evaluator.run_experiment(str(TASK_DIR / "initial.py"), tiny_settings(seeds=[0, 1]))
    second = evaluator.run_experiment(str(TASK_DIR / "initial.py"), tiny_settings(seeds=[0, 1]))
    assert {k: v for k, v in first.items() if k not in ("artifacts", "train_seconds")} == {
        k: v for k, v in second.items() if k not in ("artifacts", "train_seconds")
    }
    assert {"seeds", "curve_seed0", "curve_seed1"} == set(first["artifacts"])
    assert first["samples_per_seed"] == 3 * 32 * 8


def test_quick_stage_through_the_engine_is_in_range_and_reproducible(evaluator, tmp_path, monkeypatch):
    # the engine draws the held-out problems from a secret seed per run; set here to the documented one
    monkeypatch.setenv(SEED_VARIABLE, str(evaluator.HELD_OUT_SEED))
    node = run_quick_through_engine(TASK_DIR, tmp_path, run_id="rl", task="rl_algorithm")
    assert node.stage is Stage.EVALUATED, node.error + node.log_tail
    metrics = node.metrics
    low, high = QUICK_RANGE
    assert low < metrics["solve_rate"] < high
    assert metrics["start_rate"] < metrics["solve_rate"]  # RL improved on the warm start
    assert all(type(v) is float and math.isfinite(v) for v in metrics.values())
    assert "warm-start  after RL" in node.artifacts["seeds"]
    monkeypatch.delenv(SEED_VARIABLE)
    again = LocalJudge(TASK_DIR).evaluate(str(TASK_DIR / "initial.py"), "quick")
    assert again["solve_rate"] == metrics["solve_rate"] and again["curve_auc"] == metrics["curve_auc"]


# A candidate that forges the metric: GRPO, plus a patch of the frozen loop's solve_rate (and of whatever
# module holds one) so that every policy "solves" everything. In one process with the judge it would score 1.0;
# across the boundary it patches only its own process, and the judge measures the policy it is sent.
FORGER = """
import sys

for module in list(sys.modules.values()):
    if callable(getattr(module, "solve_rate", None)):
        module.solve_rate = lambda *args, **kwargs: 1.0


def compute_advantages(rewards):
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + 1e-6)


def policy_loss(batch):
    ratio = (batch.logp - batch.old_logp).exp()
    return -(ratio * batch.advantages[:, None] * batch.mask).sum() / batch.mask.sum()
"""


@pytest.mark.slow
def test_a_candidate_forging_its_solve_rate_is_caught(tmp_path):
    from tests.kit.task_checks import evaluate_through_engine

    node = evaluate_through_engine(TASK_DIR, load_task(TASK_DIR).with_block(FORGER + "\n\n"), tmp_path)
    assert node.stage is Stage.EVALUATED, node.error
    assert node.metrics["solve_rate"] < 0.99 and node.metrics["curve_auc"] < 0.99
