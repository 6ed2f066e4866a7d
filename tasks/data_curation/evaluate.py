"""The judge of data_curation: send the candidate the scraped corpus, take its weights, train on them, probe.

This module runs in the engine's trusted judge process; the candidate's `curate` runs in its own sandboxed
process (run.py), which receives the documents, their scraped labels and sources, and returns weights. The
ground truth, the probes, the training and the corpus's seed stay here:
1. Generate the raw corpus (corpus.py) from a seed the candidate never learns (`judge_seed`: secret per run
   in the engine; the documented `corpusSeed` when run by hand) and send it.
2. Check the weights: one finite number >= 0 per document, at least `MIN_KEPT` documents kept.
3. For each seed, train a fresh classifier (classifier.py) for a fixed budget of examples drawn with
   probability proportional to the weights.
4. Score on clean, balanced held-out probes, one per source, drawn from the same secret (`probe_seed`). Primary metric: `accuracy`, the mean over probes
   and seeds. The judge also reports, from the ground truth it kept, where the curated mass went (duplicates,
   junk, wrong labels, per-source shares): never shown to `curate`, but useful to the Researcher.
`curate_seconds` is the wall time of the request as the judge measured it.

Run by hand:  python tasks/data_curation/evaluate.py --block tasks/data_curation/baselines/no_curation.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

TASK_DIR = Path(__file__).resolve().parent
if str(TASK_DIR) not in sys.path:
    sys.path.insert(0, str(TASK_DIR))

import classifier  # noqa: E402
import corpus as corpus_lib  # noqa: E402

from kubevolve.sdk.evaluator_kit import program_with_block  # noqa: E402
from kubevolve.sdk.judging import Candidate, LocalJudge, judge_seed  # noqa: E402
from kubevolve.sdk.training import (  # noqa: E402
    Budget,
    StepOutput,
    TorchStepper,
    load_settings,
    seed_everything,
    set_threads,
    train,
)

SETTINGS = TASK_DIR / "training.yaml"
PROBE_SEED = 777
MIN_KEPT = 100


def judge(candidate: Candidate, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    settings = load_settings(SETTINGS, stage)
    seed = judge_seed(settings["corpusSeed"])
    raw, truth = corpus_lib.generate(settings["originals"], seed)
    reply = candidate.request(pack(raw))
    if not isinstance(reply, dict) or "weights" not in reply:
        raise ValueError("the runner must send {'weights': ...}")
    probes = probe_seed(seed, settings["corpusSeed"])
    return score_weights(
        raw, truth, reply["weights"], settings, curate_seconds=candidate.seconds, probe_seed=probes
    )


def probe_seed(corpus_seed: int, documented: int) -> int:
    """The probes' seed: the published PROBE_SEED with the documented corpus (by hand, in tests), else drawn
    from the run's secret seed. Probes a candidate could regenerate (corpus.py is in its sandbox) would be
    clean, correctly labelled held-out data to filter the corpus against: the test set, in its hands."""
    if corpus_seed == documented:
        return PROBE_SEED
    return int(np.random.SeedSequence([corpus_seed, PROBE_SEED]).generate_state(1, np.uint64)[0] >> 1)


def pack(raw: corpus_lib.Corpus) -> dict[str, np.ndarray]:
    """The corpus as the runner receives it: every document's tokens end to end, and their lengths."""
    return {
        "tokens": np.fromiter((t for doc in raw.docs for t in doc), dtype=np.int32),
        "lengths": np.array([len(doc) for doc in raw.docs], dtype=np.int64),
        "labels": np.asarray(raw.labels, dtype=np.int64),
        "sources": np.asarray(raw.sources, dtype=np.int64),
    }


def score_weights(
    raw,
    truth,
    weights: Any,
    settings: dict[str, Any],
    curate_seconds: float = 0.0,
    probe_seed: int = PROBE_SEED,
) -> dict:
    """Check the weights, train on them (one classifier per seed), probe; the metrics."""
    set_threads(settings["threads"])
    weights = check_weights(weights, len(raw))
    probes = corpus_lib.probes(settings["probePerClass"], probe_seed)
    packed = classifier.PackedCorpus(raw.docs, raw.labels)
    runs = [train_seed(packed, weights, probes, settings, seed) for seed in settings["seeds"]]
    per_probe = np.mean([run["accuracies"] for run in runs], axis=0)
    metrics: dict[str, Any] = {
        "accuracy": float(per_probe.mean()),
        **{f"acc_{name}": float(acc) for name, acc in zip(corpus_lib.SOURCE_NAMES, per_probe, strict=True)},
        "min_probe_accuracy": float(per_probe.min()),
        "accuracy_seed_std": statistics.pstdev(float(np.mean(run["accuracies"])) for run in runs),
        "curate_seconds": curate_seconds,
    }
    metrics.update(mass_report(weights, raw, truth))
    metrics["artifacts"] = {
        "curated_mass": mass_table(weights, raw, truth),
        "probes": probe_table(runs, settings["seeds"]),
        "curve_seed0": runs[0]["curve"],
    }
    return metrics


def check_weights(weights: Any, count: int) -> np.ndarray:
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"curate() must return one number per document: {err}") from None
    if array.shape != (count,):
        raise ValueError(
            f"curate() returned {array.shape[0] if array.ndim == 1 else array.shape} weights for {count} documents"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise ValueError(f"weight of document {bad[0]} is not finite ({array[bad[0]]})")
    negative = np.flatnonzero(array < 0)
    if len(negative):
        raise ValueError(f"weight of document {negative[0]} is negative ({array[negative[0]]:.3g})")
    kept = int((array > 0).sum())
    if kept < MIN_KEPT:
        raise ValueError(f"curate() kept {kept} documents, fewer than the minimum of {MIN_KEPT}")
    return array


def train_seed(packed, weights: np.ndarray, probes, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    generator = seed_everything(seed)
    shape = settings["model"]
    model = classifier.BagClassifier(
        corpus_lib.VOCAB_SIZE, corpus_lib.NUM_CLASSES, shape["dim"], shape["hidden"]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    stepper = TorchStepper(model, optimizer)
    probabilities = torch.tensor(weights / weights.sum(), dtype=torch.float64)
    batch = settings["batch"]

    def step_fn(step: int) -> StepOutput:
        index = torch.multinomial(probabilities, batch, replacement=True, generator=generator)
        tokens, offsets, labels = packed.batch(index)
        return StepOutput(classifier.loss_fn(model(tokens, offsets), labels), tokens=batch)

    def probe_accuracy() -> dict[str, float]:
        accs = [classifier.accuracy(model, docs, labels) for docs, labels in probes]
        return {"accuracy": sum(accs) / len(accs)}

    result = train(
        stepper, step_fn, Budget(settings["steps"], eval_every=settings["evalEvery"]), evaluate=probe_accuracy
    )
    model.eval()
    accuracies = [classifier.accuracy(model, docs, labels) for docs, labels in probes]
    return {
        "accuracies": accuracies,
        "curve": result.curve.to_text(f"seed {seed}: classifier training (eval_accuracy: mean over probes)"),
    }


def mass_report(weights: np.ndarray, raw, truth) -> dict[str, float]:
    """Shares of the sampling mass by ground-truth defect (the program never sees these)."""
    mass = weights / weights.sum()
    sources = np.asarray(raw.sources)
    report = {
        "kept_fraction": float((weights > 0).mean()),
        "junk_share": float(mass[truth.kind == 3].sum()),
        "copy_share": float(mass[(truth.kind == 1) | (truth.kind == 2)].sum()),
        "wrong_label_share": float(mass[truth.noisy & (truth.kind != 3)].sum()),
    }
    for source, name in enumerate(corpus_lib.SOURCE_NAMES):
        report[f"share_{name}"] = float(mass[sources == source].sum())
    return report


def mass_table(weights: np.ndarray, raw, truth) -> str:
    mass = weights / weights.sum()
    kept = weights > 0
    sources = np.asarray(raw.sources)
    rows = ["part                 documents  kept  share of sampling mass"]
    parts = [
        ("clean originals", (truth.kind == 0) & ~truth.noisy),
        ("wrong-label originals", (truth.kind == 0) & truth.noisy),
        ("exact copies", truth.kind == 1),
        ("near copies", truth.kind == 2),
        ("junk", truth.kind == 3),
    ]
    parts += [(f"source {name}", sources == s) for s, name in enumerate(corpus_lib.SOURCE_NAMES)]
    for name, where in parts:
        rows.append(
            f"{name:<21} {int(where.sum()):>9}  {int((kept & where).sum()):>4}  {float(mass[where].sum()):.3f}"
        )
    return "\n".join(rows)


def probe_table(runs: list[dict[str, Any]], seeds: list[int]) -> str:
    names = corpus_lib.SOURCE_NAMES
    rows = ["seed  " + "  ".join(f"{name:>7}" for name in names) + "     mean"]
    for seed, run in zip(seeds, runs, strict=True):
        accs = run["accuracies"]
        rows.append(
            f"{seed:>4}  " + "  ".join(f"{a:>7.3f}" for a in accs) + f"  {sum(accs) / len(accs):>7.3f}"
        )
    return "\n".join(rows)


def oracle_weights(raw, truth) -> np.ndarray:
    """Reference only: clean, correctly labelled originals, every source equally likely (needs the truth)."""
    good = (truth.kind == 0) & ~truth.noisy
    sources = np.asarray(raw.sources)
    counts = np.bincount(sources[good], minlength=corpus_lib.NUM_SOURCES)
    return np.where(good, 1.0 / np.maximum(counts[sources], 1), 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", default=str(TASK_DIR / "initial.py"))
    parser.add_argument("--block", help="a baseline's EVOLVE-BLOCK (baselines/NAME.py) to run in initial.py")
    parser.add_argument("--stage", default="quick")
    parser.add_argument(
        "--oracle", action="store_true", help="score the ground-truth oracle curation (reference)"
    )
    args = parser.parse_args(argv)
    if args.oracle:
        settings = load_settings(SETTINGS, args.stage)
        raw, truth = corpus_lib.generate(settings["originals"], judge_seed(settings["corpusSeed"]))
        metrics = score_weights(raw, truth, oracle_weights(raw, truth), settings)
    else:
        program = str(program_with_block(TASK_DIR, args.block)) if args.block else args.program
        metrics = LocalJudge(TASK_DIR).evaluate(program, args.stage)  # trusted programs only: no sandbox
    print(metrics["artifacts"]["curated_mass"], metrics["artifacts"]["probes"], sep="\n\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "artifacts" and not math.isnan(v)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
