"""The judge of linear_attention: probe the candidate's TokenMixer, let it train in its sandbox, then score
the trained models on held-out inputs only this process knows.

This module runs in the engine's trusted judge process, where no candidate code executes; run.py runs the
candidate's TokenMixer in its sandboxed process and answers with data. Stage flow (sizes in training.yaml):
1. `check`: the sandbox's static checks (mixer_checks.py: interface, causality, FLOP-counting complexity
   probe), a cheap first filter: a layer that fails them fails here with their message;
2. the judge's probes (judge_probes.py): causality on a fresh mixer from inputs the judge draws, and the
   sub-quadratic cost from forward passes it times with its own clock;
3. `train`: the sandbox trains a fresh MQAR model and a fresh LM (trainer.py) and keeps them;
4. `predict`: the judge draws held-out MQAR sequences and held-out stories from a seed secret to candidates
   (`judge_seed`: drawn per run by the engine; `EVAL_SEED` by hand and in tests), sends the inputs only (in
   MQAR with the filler where a training sequence holds each query's answer, `hide_answers`), with some rows
   twice (the copy changed after a cut: the causality check on the scored outputs), and receives the logits
   at the positions it names. It computes the accuracy, the loss and the twins' verdict itself.
Primary metric: `mqar_accuracy`, the mean accuracy over the evaluation lengths. `train_seconds` and
`eval_seconds` are the judge's clock, and `tokens_per_second` divides the runner's token count by it;
`mixer_params`, `mqar_train_loss`, `cost_exponent` and the curves are the candidate's claims, reported for
information.

Run by hand (the program in this process: trusted programs only):
    python tasks/linear_attention/evaluate.py --block tasks/linear_attention/baselines/linear_attention.py
With several GPUs the runner trains through DeepSpeed (run.py, `launcher` in training.yaml): by hand only,
since the ranks meet over TCP, which the candidate's sandbox refuses (README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TASK_DIR = Path(__file__).resolve().parent
if str(TASK_DIR) not in sys.path:
    sys.path.insert(0, str(TASK_DIR))

import grammar  # noqa: E402
import judge_probes  # noqa: E402
import mqar  # noqa: E402

from kubevolve.sdk.evaluator_kit import program_with_block  # noqa: E402
from kubevolve.sdk.judging import Candidate, in_process_candidate, judge_seed  # noqa: E402
from kubevolve.sdk.training import load_settings, set_threads  # noqa: E402
from kubevolve.sdk.training.settings import merge  # noqa: E402

SETTINGS = TASK_DIR / "training.yaml"
EVAL_SEED = 12345  # the held-out data's seed by hand and in tests; the engine draws a secret one per run
REPLY_BYTES = 32 << 20  # logits per predict request; larger sets go in several requests


def judge(candidate: Candidate, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    return judge_settings(candidate, load_settings(SETTINGS, stage))


def run_experiment(program_path: str, settings: dict[str, Any], *, check: bool = True) -> dict:
    """Hand runs and tests with settings of their own: the program in this process (trusted programs only).
    `check=False` skips the checks and the probes (only for measuring the quadratic softmax reference)."""
    return judge_settings(in_process_candidate(TASK_DIR, program_path), settings, check=check)


def judge_settings(candidate: Candidate, settings: dict[str, Any], *, check: bool = True) -> dict:
    set_threads(settings["threads"])
    seed = judge_seed(EVAL_SEED)
    exponents: dict[str, float] = {}
    checks, probes = "checks and probes skipped", []
    if check:
        report = candidate.request({"op": "check", "settings": settings})
        checks = f"in the candidate's process: {_text(report, 'summary')}"
        exponents["cost_exponent"] = _number(report, "cost_exponent")  # counted in the sandbox: a claim
        probes.append(judge_probes.causality_probe(candidate, settings, _derived(seed, 1)))
        exponents["time_exponent"], summary = judge_probes.time_probe(candidate, settings, _derived(seed, 2))
        probes.append(summary)
    trained = candidate.request({"op": "train", "settings": settings})
    train_seconds = candidate.seconds
    if not isinstance(trained, dict) or not {"mqar", "lm", "world_size"} <= set(trained):
        raise ValueError("the runner must send mqar, lm and world_size after training")
    twins = torch.Generator().manual_seed(_derived(seed, 3))
    recall = score_mqar(candidate, settings, seed, twins)
    lm = score_lm(candidate, settings, seed, twins)
    probes.append(
        f"the trained models' logits before each of {recall['twins'] + lm['twins']} cuts are unchanged by "
        f"the tokens after it (largest relative difference {max(recall['worst'], lm['worst']):.1e}, "
        f"tolerance {judge_probes.TWIN_TOLERANCE:g})"
    )
    claims = (trained["mqar"], trained["lm"])
    tokens = sum(_number(claim, "tokens") for claim in claims) * _number(trained, "world_size")
    metrics = {
        "mqar_accuracy": recall["accuracy"],
        **{f"mqar_acc_len{length}": acc for length, acc in recall["per_length"].items()},
        "lm_loss": lm["loss"],
        "tokens_per_second": tokens / train_seconds,
        "mixer_params": _number(trained["mqar"], "mixer_params"),
        "train_seconds": train_seconds,
        "eval_seconds": recall["seconds"] + lm["seconds"],
        "mqar_train_loss": _number(trained["mqar"], "train_loss"),
        **exponents,
    }
    metrics["artifacts"] = {
        "checks": checks,
        "probes": "\n".join(probes),
        "mqar_accuracy": recall["table"],
        "mqar_curve": _text(trained["mqar"], "curve"),
        "lm_curve": _text(trained["lm"], "curve"),
    }
    return metrics


def score_mqar(
    candidate: Candidate, settings: dict[str, Any], seed: int, twins: torch.Generator
) -> dict[str, Any]:
    """Accuracy per evaluation length on held-out sequences drawn from `seed`, from the logits at the query
    positions; the values to recall stay here."""
    cfg = settings["mqar"]
    held_out = torch.Generator().manual_seed(seed)
    per_length, seconds, worst, count = {}, 0.0, 0.0, 0
    for length, pairs in cfg["eval"]:
        inputs, targets = mqar.batch(cfg["evalSequences"], length, pairs, cfg["vocab"], held_out)
        queries = torch.sort((targets != mqar.IGNORE).nonzero()[:, 1].view(len(inputs), pairs), dim=1).values
        inputs = hide_answers(inputs, queries)
        rows, twin_pairs = judge_probes.add_twins(
            inputs, queries + 1, judge_probes.TWINS, cfg["vocab"], twins
        )
        positions = torch.cat([queries, queries[[row for row, _ in twin_pairs]]])
        logits, spent = predict(candidate, "mqar", rows, positions, cfg["vocab"], twins)
        worst = max(
            worst,
            judge_probes.check_twins(
                logits, positions.numpy(), twin_pairs, f"held-out MQAR sequence of length {length}, row"
            ),
        )
        answers = targets.gather(1, queries)
        per_length[length] = mqar.accuracy(torch.from_numpy(logits[: len(inputs)]), answers)
        seconds, count = seconds + spent, count + len(twin_pairs)
    mean = sum(per_length.values()) / len(per_length)
    table = ["length  pairs  accuracy"]
    table += [f"{length:>6}  {pairs:>5}  {per_length[length]:.4f}" for length, pairs in cfg["eval"]]
    table.append(f"  mean         {mean:.4f}")
    return {
        "accuracy": mean,
        "per_length": per_length,
        "table": "\n".join(table),
        "seconds": seconds,
        "worst": worst,
        "twins": count,
    }


def hide_answers(inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`inputs` with the token after each query (the value to recall, in a training sequence) replaced by the
    filler: the scored sequences hold each answer only where recall must find it, in the key-value pairs at
    their start, so an output that reads later tokens learns nothing from them. A causal layer's outputs at
    a query are the same either way; later queries see fillers after the earlier ones, which moves DeltaNet's
    score by less than the choice of held-out sequences does (README.md)."""
    hidden = inputs.clone()
    hidden.scatter_(1, queries + 1, mqar.FILLER)
    return hidden


def score_lm(
    candidate: Candidate, settings: dict[str, Any], seed: int, twins: torch.Generator
) -> dict[str, Any]:
    """Cross-entropy on held-out stories generated from `seed`, from the logits at every position."""
    cfg = settings["lm"]
    length, vocab = cfg["length"], len(grammar.VOCAB)
    inputs, targets = grammar.held_out(grammar.corpus(cfg["heldOutTokens"], seed=seed), length)
    cuts = torch.arange(1, length).expand(len(inputs), -1)
    rows, twin_pairs = judge_probes.add_twins(inputs, cuts, judge_probes.TWINS, vocab, twins)
    positions = torch.arange(length).expand(len(rows), -1)
    logits, seconds = predict(candidate, "lm", rows, None, vocab, twins)
    worst = judge_probes.check_twins(logits, positions.numpy(), twin_pairs, "held-out story window, row")
    loss = float(
        F.cross_entropy(
            torch.from_numpy(logits[: len(inputs)]).reshape(-1, vocab).double(), targets.reshape(-1)
        )
    )
    if not math.isfinite(loss):
        raise ValueError(f"the language model's held-out loss is {loss}")
    return {"loss": loss, "seconds": seconds, "worst": worst, "twins": len(twin_pairs)}


def predict(
    candidate: Candidate,
    task: str,
    rows: torch.Tensor,
    positions: torch.Tensor | None,
    vocab: int,
    shuffle: torch.Generator,
) -> tuple[np.ndarray, float]:
    """The trained `task` model's logits on `rows` at `positions` (every position when None), in the order of
    `rows`: sent in an order of the judge's choosing (twins among the originals), in requests of at most
    REPLY_BYTES of logits. Returns the logits and the judge's time for the requests."""
    order = torch.randperm(len(rows), generator=shuffle)
    width = rows.shape[1] if positions is None else positions.shape[1]
    per_request = max(1, REPLY_BYTES // (width * vocab * 4))
    logits = np.empty((len(rows), width, vocab), dtype=np.float32)
    seconds = 0.0
    for start in range(0, len(rows), per_request):
        chosen = order[start : start + per_request]
        request: dict[str, Any] = {"op": "predict", "task": task, "inputs": rows[chosen].numpy()}
        if positions is not None:
            request["positions"] = positions[chosen].numpy()
        reply = candidate.request(request, max_bytes=len(chosen) * width * vocab * 4 + (1 << 20))
        logits[chosen.numpy()] = judge_probes.checked_array(
            reply, "logits", (len(chosen), width, vocab), f"the {task} model's logits"
        )
        seconds += candidate.seconds
    return logits, seconds


def _derived(seed: int, salt: int) -> int:
    """Another seed from the judge's (for the probes and the twins, apart from the held-out data). One way:
    the probes send theirs to the runner, which must not learn the held-out data's seed from it."""
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _number(reply: Any, key: str) -> float:
    value = reply.get(key) if isinstance(reply, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"the runner must send a finite number {key!r}, got {value!r}")
    return float(value)


def _text(reply: Any, key: str) -> str:
    value = reply.get(key) if isinstance(reply, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"the runner must send the text {key!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", default=str(TASK_DIR / "initial.py"))
    parser.add_argument("--block", help="a baseline's EVOLVE-BLOCK (baselines/NAME.py) to run in initial.py")
    parser.add_argument("--stage", default="quick")
    parser.add_argument("--engine", choices=["torch", "deepspeed"], help="override the stage's engine")
    parser.add_argument("--seed", type=int, help="override the stage's training seed")
    parser.add_argument(
        "--skip-checks", action="store_true", help="measure a layer the checks reject (softmax)"
    )
    parser.add_argument(
        "--override",
        default="{}",
        help='JSON merged over the stage settings, e.g. \'{"mqar": {"steps": 50}}\'',
    )
    args = parser.parse_args(argv)
    settings = merge(load_settings(SETTINGS, args.stage), json.loads(args.override))
    if args.engine:
        settings["engine"] = args.engine
    if args.seed is not None:
        settings["seed"] = args.seed
    program = str(program_with_block(TASK_DIR, args.block)) if args.block else args.program
    metrics = run_experiment(program, settings, check=not args.skip_checks)
    print(metrics["artifacts"]["probes"], metrics["artifacts"]["mqar_accuracy"], sep="\n\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "artifacts"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
