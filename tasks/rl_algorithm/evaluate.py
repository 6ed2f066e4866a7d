"""The judge of rl_algorithm: the candidate's objective trains the warm-started policy in its sandbox, one
request per seed; this module, in the engine's trusted judge process, measures the policies it sends back.

The candidate defines `compute_advantages(rewards)` and `policy_loss(batch)`; everything else (the policy,
the sampler, the verifiable reward, the optimizer, the budget of samples) is frozen in rl_loop.py, so scores
compare objectives and nothing else. run.py trains and returns the policy's weights (after the warm start, at
each evaluation point, at the end); the judge loads them into a policy of its own and decodes greedily on
held-out problems drawn from a seed only it knows (`judge_seed`). Primary metric: `solve_rate`, the held-out
exact-answer rate after the RL budget, averaged over the stage's seeds. `curve_auc` is the mean held-out rate
over the evaluation points, also measured here; `train_seconds` is the wall time the judge saw.

Run by hand:  python tasks/rl_algorithm/evaluate.py --block tasks/rl_algorithm/baselines/rloo.py --stage quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

TASK_DIR = Path(__file__).resolve().parent
if str(TASK_DIR) not in sys.path:
    sys.path.insert(0, str(TASK_DIR))

import arithmetic  # noqa: E402
import rl_loop  # noqa: E402

from kubevolve.sdk.evaluator_kit import program_with_block  # noqa: E402
from kubevolve.sdk.judging import Candidate, in_process_candidate, judge_seed  # noqa: E402
from kubevolve.sdk.training import load_settings, set_threads  # noqa: E402

SETTINGS = TASK_DIR / "training.yaml"
HELD_OUT_SEED = 424242


def judge(candidate: Candidate, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    return judge_settings(candidate, load_settings(SETTINGS, stage))


def run_experiment(program_path: str, settings: dict[str, Any]) -> dict:
    """Hand runs and tests with settings of their own: the program in this process (trusted programs only)."""
    return judge_settings(in_process_candidate(TASK_DIR, program_path), settings)


def judge_settings(candidate: Candidate, settings: dict[str, Any]) -> dict:
    set_threads(settings["threads"])
    digits = settings["digits"]
    held_out = arithmetic.held_out_problems(settings["heldOut"], digits, judge_seed(HELD_OUT_SEED))
    runs = []
    for seed in settings["seeds"]:
        trained = candidate.request({"seed": seed, "settings": settings})
        runs.append(measure(trained, settings, held_out, candidate.seconds))
    rates = [run["solve_rate"] for run in runs]
    metrics: dict[str, Any] = {
        "solve_rate": statistics.fmean(rates),
        "solve_rate_min": min(rates),
        "solve_rate_std": statistics.pstdev(rates),
        "start_rate": statistics.fmean(run["start_rate"] for run in runs),
        "carry_solve_rate": statistics.fmean(run["carry_rate"] for run in runs),
        "curve_auc": statistics.fmean(run["curve_auc"] for run in runs),
        "samples_per_seed": float(settings["iterations"] * settings["prompts"] * settings["groupSize"]),
        "train_seconds": sum(run["seconds"] for run in runs),
    }
    summary = ["seed  warm-start  after RL  with carry  curve AUC"]
    summary += [
        f"{seed:>4}  {run['start_rate']:>10.3f}  {run['solve_rate']:>8.3f}  {run['carry_rate']:>10.3f}  {run['curve_auc']:>9.3f}"
        for seed, run in zip(settings["seeds"], runs, strict=True)
    ]
    summary.append(f"mean  {metrics['start_rate']:>10.3f}  {metrics['solve_rate']:>8.3f}")
    metrics["artifacts"] = {
        "seeds": "\n".join(summary),
        **{f"curve_seed{seed}": run["curve"] for seed, run in zip(settings["seeds"], runs, strict=True)},
    }
    return metrics


def measure(trained: Any, settings: dict[str, Any], held_out, seconds: float) -> dict[str, Any]:
    """One seed's policies, as the runner sent them, measured on the held-out problems."""
    if not isinstance(trained, dict) or not {"start", "checkpoints", "final", "curve"} <= set(trained):
        raise ValueError("the runner must send start, checkpoints, final and curve for each seed")
    if not isinstance(trained["checkpoints"], list) or not trained["checkpoints"]:
        raise ValueError("the runner sent no checkpoint of the policy during training")
    digits, probe = settings["digits"], held_out[: settings["curveProblems"]]
    final = rl_loop.policy_from_weights(trained["final"], settings)
    curve = [
        rl_loop.solve_rate(rl_loop.policy_from_weights(weights, settings), probe, digits)
        for weights in trained["checkpoints"]
    ]
    points = ", ".join(f"{rate:.3f}" for rate in curve)
    return {
        "solve_rate": rl_loop.solve_rate(final, held_out, digits),
        "start_rate": rl_loop.solve_rate(
            rl_loop.policy_from_weights(trained["start"], settings), held_out, digits
        ),
        "carry_rate": rl_loop.carry_rate(final, held_out, digits),
        "curve_auc": rl_loop.curve_auc(curve),
        "seconds": seconds,
        "curve": f"held-out solve rate at the evaluation points (the judge's): {points}\n\n{str(trained['curve'])[-6000:]}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", default=str(TASK_DIR / "initial.py"))
    parser.add_argument("--block", help="a baseline's EVOLVE-BLOCK (baselines/NAME.py) to run in initial.py")
    parser.add_argument("--stage", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the stage's seeds")
    args = parser.parse_args(argv)
    settings = load_settings(SETTINGS, args.stage)
    if args.seeds:
        settings["seeds"] = args.seeds
    program = str(program_with_block(TASK_DIR, args.block)) if args.block else args.program
    metrics = run_experiment(program, settings)
    print(metrics["artifacts"]["seeds"])
    print(json.dumps({k: v for k, v in metrics.items() if k != "artifacts"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
