"""What a judge scores against must not be computable by the candidate: every task's held-out data comes from
the run's secret judge seed (kubevolve.sdk.judging.judge_seed), never from a constant the candidate can read
in the task folder it runs beside."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from kubevolve.sdk.judging import SEED_VARIABLE
from tests.kit.paths import REPO
from tests.kit.task_checks import load_module

SECRET = 918273645  # what the engine puts in the judge's environment: drawn per run


class WeightsEverywhere:
    """A candidate that keeps every document: enough to reach the probes."""

    seconds = 0.0

    def request(self, request: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"weights": np.ones(len(request["lengths"]))}


def test_data_curations_probes_are_not_the_published_ones_under_a_secret_seed(monkeypatch):
    """The probes are clean, correctly labelled documents of every topic: a candidate that regenerates them
    (corpus.py and PROBE_SEED are in the task folder, readable in its sandbox and its pod's image) can train
    on the held-out set in its own process (classifier.py is there too) and keep the corpus documents whose
    scraped label agrees, which no honest curator can do. Under the run's secret seed they must differ."""
    evaluator = load_module(REPO / "tasks" / "data_curation" / "evaluate.py", "data_curation_evaluate_adv")
    corpus = sys.modules["corpus"]
    used: list[Any] = []
    original = corpus.probes

    def recorded(per_class: int, seed: int):
        used.append((per_class, seed))
        return original(per_class, seed)

    monkeypatch.setattr(evaluator.corpus_lib, "probes", recorded)
    monkeypatch.setattr(  # no training: the probes the judge draws are all this test looks at
        evaluator,
        "train_seed",
        lambda packed, weights, probes, settings, seed: {"accuracies": [0.0] * 4, "curve": ""},
    )
    monkeypatch.setenv(SEED_VARIABLE, str(SECRET))
    evaluator.judge(WeightsEverywhere(), "quick")
    ((per_class, seed),) = used
    published = original(per_class, evaluator.PROBE_SEED)
    judged = original(per_class, seed)
    assert judged[0][0] != published[0][0], "the judge scores on probes the candidate can regenerate"
