"""Evaluator for linear_attention: check the candidate's TokenMixer, then train small language models with it.

Stage flow (settings per stage in training.yaml, read through kubevolve.sdk.training):
1. static checks inside the sandbox (mixer_checks.py): the interface, causality, and sub-quadratic cost; a
   violation raises with a specific message and the candidate fails this stage;
2. MQAR: train a fresh model on multi-query associative recall for a fixed token budget; accuracy per
   sequence length on a fixed evaluation set (the same for every candidate);
3. language modelling: train another fresh model on generated stories; held-out loss.
Primary metric: `mqar_accuracy`, the mean accuracy over the evaluation lengths.

The evaluation is deterministic for a given seed on the CPU. Run it by hand, e.g. to measure a baseline:
    python tasks/linear_attention/evaluate.py --block tasks/linear_attention/baselines/linear_attention.py --stage quick
With several GPUs and `launcher` set, the full stage starts one process per GPU (`deepspeed` or `torchrun`,
built by kubevolve.sdk.training.launcher); each runs this file with `--rank-entry`, and rank 0 reports.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

TASK_DIR = Path(__file__).resolve().parent
if str(TASK_DIR) not in sys.path:
    sys.path.insert(0, str(TASK_DIR))

import grammar  # noqa: E402
import mixer_checks  # noqa: E402
import mqar  # noqa: E402
from backbone import LanguageModel  # noqa: E402

from kubevolve.sdk.evaluator_kit import load_program, program_with_block  # noqa: E402
from kubevolve.sdk.training import (  # noqa: E402
    Budget,
    StepOutput,
    build_stepper,
    load_settings,
    seed_everything,
    set_threads,
    train,
    training_device,
    warmup_cosine,
)
from kubevolve.sdk.training import distributed as dist_env  # noqa: E402
from kubevolve.sdk.training.launcher import launch_command, node_layout, run_launched  # noqa: E402
from kubevolve.sdk.training.settings import merge  # noqa: E402

SETTINGS = TASK_DIR / "training.yaml"
EVAL_SEED = 12345  # the evaluation data is the same for every candidate and every training seed


def evaluate(program_path: str, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    settings = load_settings(SETTINGS, stage)
    if settings.get("requireGpu") and not torch.cuda.is_available():
        raise RuntimeError(
            f"the {stage} stage is sized for a GPU and none is visible; run the quick stage only on a CPU "
            "(stages: [quick], as tasks/linear_attention/demo.yaml does) or run on a GPU node"
        )
    if settings.get("launcher") and (torch.cuda.device_count() > 1 or node_layout().nodes > 1):
        return run_on_all_gpus(program_path, stage, settings)
    return run_experiment(program_path, settings)


def run_experiment(program_path: str, settings: dict[str, Any], *, check: bool = True) -> dict:
    """Checks, MQAR training, LM training; the metrics dict. `check=False` skips the static checks (only for
    measuring the quadratic softmax reference by hand)."""
    set_threads(settings["threads"])
    engine = settings["engine"]
    device = training_device(engine, settings.get("device"))
    mixer_class = load_program(program_path, required=["TokenMixer"]).TokenMixer
    model = settings["model"]
    report = (
        mixer_checks.run_checks(mixer_class, model["dim"], model["heads"], settings["seed"])
        if check
        else None
    )
    recall = train_mqar(mixer_class, settings, device, engine)
    lm = train_lm(mixer_class, settings, device, engine)
    metrics: dict[str, Any] = {
        "mqar_accuracy": recall["accuracy"],
        **{f"mqar_acc_len{length}": acc for length, acc in recall["per_length"].items()},
        "lm_loss": lm["loss"],
        "tokens_per_second": recall["tokens_per_second"],
        "mixer_params": float(recall["mixer_params"]),
        "train_seconds": recall["train_seconds"] + lm["train_seconds"],
        "mqar_train_loss": recall["train_loss"],
    }
    if report is not None:
        metrics["cost_exponent"] = report.cost_exponent
    metrics["artifacts"] = {
        "checks": report.summary if report else "static checks skipped",
        "mqar_accuracy": recall["table"],
        "mqar_curve": recall["curve"],
        "lm_curve": lm["curve"],
    }
    return metrics


def _model_and_stepper(
    mixer_class: type, vocab: int, settings: dict, device, engine: str, micro_batch: int, steps: int
):
    shape, opt = settings["model"], settings["optimizer"]
    model = LanguageModel(
        mixer_class, vocab, shape["dim"], shape["layers"], shape["heads"], shape["mlpRatio"]
    )
    model = model.to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt["weightDecay"]}, {"params": other, "weight_decay": 0.0}],
        lr=opt["lr"],
        betas=(0.9, 0.95),
    )
    scheduler = warmup_cosine(optimizer, steps, opt["warmupFraction"])
    stepper = build_stepper(
        model,
        optimizer,
        engine=engine,
        device=device,
        micro_batch=micro_batch,
        scheduler=scheduler,
        grad_clip=opt["gradClip"],
        deepspeed_section=settings.get("deepspeed"),
    )
    return model, stepper


def train_mqar(mixer_class: type, settings: dict, device, engine: str) -> dict:
    cfg = settings["mqar"]
    vocab, per_step = cfg["vocab"], cfg["tokensPerStep"]
    generator = seed_everything(settings["seed"] * 1000 + dist_env.rank())
    model, stepper = _model_and_stepper(
        mixer_class,
        vocab,
        settings,
        device,
        engine,
        per_step // max(length for length, _ in cfg["train"]),
        cfg["steps"],
    )
    eval_gen = torch.Generator().manual_seed(EVAL_SEED)
    eval_sets = [
        (length, mqar.batch(cfg["evalSequences"], length, pairs, vocab, eval_gen))
        for length, pairs in cfg["eval"]
    ]

    def step_fn(step: int) -> StepOutput:
        length, pairs = cfg["train"][step % len(cfg["train"])]
        inputs, targets = mqar.batch(per_step // length, length, pairs, vocab, generator)
        logits = stepper.model(inputs.to(device))
        loss = F.cross_entropy(
            logits.reshape(-1, vocab).float(), targets.to(device).reshape(-1), ignore_index=mqar.IGNORE
        )
        return StepOutput(loss, tokens=inputs.numel())

    def accuracies(limit: int | None = None) -> dict[int, float]:
        out = {}
        for length, (inputs, targets) in eval_sets:
            hits = total = 0
            for start in range(0, len(inputs) if limit is None else min(limit, len(inputs)), 64):
                logits = stepper.model(inputs[start : start + 64].to(device))
                chunk = targets[start : start + 64].to(device)
                mask = chunk != mqar.IGNORE
                hits += int(((logits.argmax(-1) == chunk) & mask).sum())
                total += int(mask.sum())
            out[length] = hits / max(1, total)
        return out

    def curve_eval() -> dict[str, float]:
        accs = accuracies(limit=32)
        return {"acc": sum(accs.values()) / len(accs)}

    result = train(stepper, step_fn, Budget(cfg["steps"], eval_every=cfg["evalEvery"]), evaluate=curve_eval)
    stepper.eval()
    with torch.no_grad():
        per_length = accuracies()
    mean = sum(per_length.values()) / len(per_length)
    table = ["length  pairs  accuracy"]
    table += [f"{length:>6}  {pairs:>5}  {per_length[length]:.4f}" for length, pairs in cfg["eval"]]
    table.append(f"  mean         {mean:.4f}")
    return {
        "accuracy": mean,
        "per_length": per_length,
        "table": "\n".join(table),
        "curve": result.curve.to_text(
            "MQAR training (eval_acc: mean accuracy on the first 32 evaluation sequences per length)"
        ),
        "tokens_per_second": result.tokens_per_second * dist_env.world_size(),
        "train_seconds": result.train_seconds,
        "train_loss": result.final_loss,
        "mixer_params": model.mixer_parameters(),
    }


def train_lm(mixer_class: type, settings: dict, device, engine: str) -> dict:
    cfg = settings["lm"]
    vocab = len(grammar.VOCAB)
    length, per_step = cfg["length"], cfg["tokensPerStep"]
    generator = seed_everything(settings["seed"] * 1000 + 500 + dist_env.rank())
    stream = grammar.corpus(cfg["trainTokens"], seed=settings["seed"])
    held_in, held_target = grammar.held_out(grammar.corpus(cfg["heldOutTokens"], seed=EVAL_SEED), length)
    model, stepper = _model_and_stepper(
        mixer_class, vocab, settings, device, engine, per_step // length, cfg["steps"]
    )

    def step_fn(step: int) -> StepOutput:
        inputs, targets = grammar.windows(stream, per_step // length, length, generator)
        logits = stepper.model(inputs.to(device))
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.to(device).reshape(-1))
        return StepOutput(loss, tokens=inputs.numel())

    def held_out_loss() -> dict[str, float]:
        total, count = 0.0, 0
        for start in range(0, len(held_in), 64):
            logits = stepper.model(held_in[start : start + 64].to(device))
            target = held_target[start : start + 64].to(device)
            total += float(
                F.cross_entropy(logits.reshape(-1, vocab).float(), target.reshape(-1), reduction="sum")
            )
            count += target.numel()
        return {"loss": total / count}

    result = train(stepper, step_fn, Budget(cfg["steps"]), evaluate=held_out_loss)
    loss = result.final_eval["loss"]
    if not math.isfinite(loss):
        raise ValueError(f"the language model's held-out loss is {loss}")
    return {
        "loss": loss,
        "curve": result.curve.to_text("LM training on generated stories (eval_loss: held-out cross-entropy)"),
        "train_seconds": result.train_seconds,
    }


def run_on_all_gpus(program_path: str, stage: str, settings: dict[str, Any]) -> dict:
    """One process per visible GPU (on every node of a multi-node TrainJob) through the configured launcher;
    rank 0 writes the metrics."""
    result = Path(tempfile.mkdtemp(prefix="kubevolve-rank0-", dir=".")) / "metrics.json"
    entry = [
        str(Path(__file__)),
        "--program",
        str(program_path),
        "--stage",
        stage,
        "--rank-entry",
        "--result",
        str(result),
    ]
    nodes = node_layout()  # several in a TrainJob's launcher pod (KUBEVOLVE_NUM_NODES, the MPI hostfile)
    if nodes.nodes > 1 and settings["launcher"] != "deepspeed":
        raise ValueError(
            "a multi-node evaluation needs `launcher: deepspeed` (torchrun starts one node only)"
        )
    command = launch_command(
        entry,
        gpus=torch.cuda.device_count(),
        launcher=settings["launcher"],
        nodes=nodes.nodes,
        hostfile=nodes.hostfile,
        master_addr=nodes.master_addr,
        master_port=dist_env.free_port() if nodes.nodes == 1 else 29500,
    )
    return run_launched(command, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", default=str(TASK_DIR / "initial.py"))
    parser.add_argument("--block", help="a baseline's EVOLVE-BLOCK (baselines/NAME.py) to run in initial.py")
    parser.add_argument("--stage", default="quick")
    parser.add_argument("--result", help="write the metrics JSON here (rank 0 only)")
    parser.add_argument("--rank-entry", action="store_true", help="one rank of a launched multi-GPU run")
    # the deepspeed launcher appends --local_rank=N; the rank is read from LOCAL_RANK, which it also sets
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=["torch", "deepspeed"], help="override the stage's engine")
    parser.add_argument("--seed", type=int, help="override the stage's seed")
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
    if args.rank_entry:
        settings["engine"] = "deepspeed"
    if args.engine:
        settings["engine"] = args.engine
    if args.seed is not None:
        settings["seed"] = args.seed
    program = str(program_with_block(TASK_DIR, args.block)) if args.block else args.program
    metrics = run_experiment(program, settings, check=not args.skip_checks)
    if dist_env.rank() == 0:
        text = json.dumps(metrics, indent=2)
        if args.result:
            Path(args.result).write_text(text)
        print(text if not args.result else json.dumps({k: v for k, v in metrics.items() if k != "artifacts"}))
    dist_env.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
