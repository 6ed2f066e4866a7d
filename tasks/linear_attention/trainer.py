"""Training the two language models around a candidate's TokenMixer: the candidate's side of the evaluation.

This module runs in the candidate's sandboxed process (imported by run.py), so everything it computes is the
candidate's claim: the judge (evaluate.py) scores the trained models itself, on held-out inputs it draws from
a secret seed. The training is what it was when it ran inside the evaluator: the same seeds, data, model and
optimiser, so a program trains to the same weights as before.

1. MQAR: a fresh model trained on multi-query associative recall for a fixed token budget (training.yaml,
   `mqar`); its curve is measured on the runner's own validation sequences (`VALIDATION_SEED`, public: the
   curve is for the Researcher and the Analyzer, never a metric).
2. Language modelling: another fresh model trained on generated stories (`lm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grammar
import mqar
import torch
import torch.nn.functional as F
from backbone import LanguageModel

from kubevolve.sdk.training import (
    Budget,
    StepOutput,
    build_stepper,
    seed_everything,
    train,
    warmup_cosine,
)
from kubevolve.sdk.training import distributed as dist_env

VALIDATION_SEED = 54321  # the runner's curve data; the judge's held-out data comes from its own secret seed
CURVE_SEQUENCES = 32  # validation sequences per MQAR length for the curve
LM_VOCAB = len(grammar.VOCAB)


@dataclass
class Trained:
    """A trained model as the runner keeps it between the judge's requests."""

    model: Any  # callable like the module: tokens (B, T) -> logits (B, T, vocab); a DeepSpeed engine too
    vocab: int
    device: torch.device
    info: dict[str, Any]  # curve, losses, throughput: the candidate's claims, reported as such


def build_model(mixer_class: type, vocab: int, settings: dict[str, Any]) -> LanguageModel:
    shape = settings["model"]
    return LanguageModel(mixer_class, vocab, shape["dim"], shape["layers"], shape["heads"], shape["mlpRatio"])


def _model_and_stepper(
    mixer_class: type, vocab: int, settings: dict, device, engine: str, micro_batch: int, steps: int
):
    opt = settings["optimizer"]
    model = build_model(mixer_class, vocab, settings).to(device)
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


def train_mqar(mixer_class: type, settings: dict, device, engine: str) -> Trained:
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
    validation_gen = torch.Generator().manual_seed(VALIDATION_SEED)
    validation = [
        mqar.batch(CURVE_SEQUENCES, length, pairs, vocab, validation_gen) for length, pairs in cfg["eval"]
    ]

    def step_fn(step: int) -> StepOutput:
        length, pairs = cfg["train"][step % len(cfg["train"])]
        inputs, targets = mqar.batch(per_step // length, length, pairs, vocab, generator)
        logits = stepper.model(inputs.to(device))
        loss = F.cross_entropy(
            logits.reshape(-1, vocab).float(), targets.to(device).reshape(-1), ignore_index=mqar.IGNORE
        )
        return StepOutput(loss, tokens=inputs.numel())

    def curve_eval() -> dict[str, float]:
        accs = [
            mqar.accuracy(stepper.model(inputs.to(device)), targets.to(device))
            for inputs, targets in validation
        ]
        return {"acc": sum(accs) / len(accs)}

    result = train(stepper, step_fn, Budget(cfg["steps"], eval_every=cfg["evalEvery"]), evaluate=curve_eval)
    stepper.eval()
    info = {
        "curve": result.curve.to_text(
            f"MQAR training (eval_acc: mean accuracy on the runner's own {CURVE_SEQUENCES} validation "
            "sequences per length; the judge's score is on held-out sequences it draws itself)"
        ),
        "train_loss": result.final_loss,
        "tokens": result.tokens,
        "mixer_params": model.mixer_parameters(),
    }
    return Trained(stepper.model, vocab, device, info)


def train_lm(mixer_class: type, settings: dict, device, engine: str) -> Trained:
    cfg = settings["lm"]
    vocab = LM_VOCAB
    length, per_step = cfg["length"], cfg["tokensPerStep"]
    generator = seed_everything(settings["seed"] * 1000 + 500 + dist_env.rank())
    stream = grammar.corpus(cfg["trainTokens"], seed=settings["seed"])
    model, stepper = _model_and_stepper(
        mixer_class, vocab, settings, device, engine, per_step // length, cfg["steps"]
    )

    def step_fn(step: int) -> StepOutput:
        inputs, targets = grammar.windows(stream, per_step // length, length, generator)
        logits = stepper.model(inputs.to(device))
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.to(device).reshape(-1))
        return StepOutput(loss, tokens=inputs.numel())

    result = train(stepper, step_fn, Budget(cfg["steps"]))
    stepper.eval()
    info = {
        "curve": result.curve.to_text(
            "LM training on generated stories (the held-out loss is the judge's, on text it generates itself)"
        ),
        "train_loss": result.final_loss,
        "tokens": result.tokens,
    }
    return Trained(stepper.model, vocab, device, info)


def module_of(model: Any) -> torch.nn.Module:
    """The plain module inside a DeepSpeed engine (or the module itself)."""
    return getattr(model, "module", model)
