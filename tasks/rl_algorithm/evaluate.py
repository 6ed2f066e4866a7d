"""Evaluator for rl_algorithm: train the warm-started policy with the candidate's objective, for each seed.

The candidate defines `compute_advantages(rewards)` and `policy_loss(batch)`; everything else (the policy,
the sampler, the verifiable reward, the optimizer, the budget of samples) is frozen in rl_loop.py, so scores
compare objectives and nothing else. Primary metric: `solve_rate`, the held-out exact-answer rate (greedy
decoding, 1,000 fixed problems) after the RL budget, averaged over the stage's seeds.

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

from kubevolve.sdk.evaluator_kit import load_program, program_with_block  # noqa: E402
from kubevolve.sdk.training import load_settings, set_threads  # noqa: E402

SETTINGS = TASK_DIR / "training.yaml"
HELD_OUT_SEED = 424242
REQUIRED = ("compute_advantages", "policy_loss")


def evaluate(program_path: str, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    return run_experiment(program_path, load_settings(SETTINGS, stage))


def run_experiment(program_path: str, settings: dict[str, Any]) -> dict:
    set_threads(settings["threads"])
    program = load_program(program_path, required=REQUIRED)
    held_out = arithmetic.held_out_problems(settings["heldOut"], settings["digits"], HELD_OUT_SEED)
    runs = [rl_loop.run_seed(program, settings, seed, held_out) for seed in settings["seeds"]]
    rates = [run["solve_rate"] for run in runs]
    metrics: dict[str, Any] = {
        "solve_rate": statistics.fmean(rates),
        "solve_rate_min": min(rates),
        "solve_rate_std": statistics.pstdev(rates),
        "start_rate": statistics.fmean(run["start_rate"] for run in runs),
        "carry_solve_rate": statistics.fmean(run["carry_rate"] for run in runs),
        "curve_auc": statistics.fmean(run["curve_auc"] for run in runs),
        "samples_per_seed": float(runs[0]["samples"]),
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
        **{
            f"curve_seed{seed}": run["curve"].to_text(
                f"seed {seed}: RL (eval_solve_rate on {settings['curveProblems']} held-out problems)"
            )
            for seed, run in zip(settings["seeds"], runs, strict=True)
        },
    }
    return metrics


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
