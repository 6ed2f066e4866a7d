"""The data_curation task: the generated corpus and its defects, the frozen tools, the checks on the
weights a program returns, and the quick stage of the heuristic baseline, in process (LocalJudge) and through
the engine (the judge in its process, curate() in the sandbox)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from kubevolve.core.models import Stage
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.sdk.evaluator_kit import program_with_block
from kubevolve.sdk.judging import SEED_VARIABLE, CandidateError, LocalJudge
from kubevolve.sdk.training import load_settings
from tests.kit.paths import REPO
from tests.kit.task_checks import (
    assert_cognition_sections_cite_sources,
    evaluate_through_engine,
    load_module,
    run_quick_through_engine,
)

TASK_DIR = REPO / "tasks" / "data_curation"
QUICK_RANGE = (0.82, 0.92)  # tasks/data_curation/README.md: the heuristic's quick stage (measured 0.864)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one thread, as in the evaluation worker


@pytest.fixture(scope="module")
def evaluator():
    return load_module(TASK_DIR / "evaluate.py", "data_curation_evaluate")


@pytest.fixture(scope="module")
def judged():
    """The judge and the runner in this process: `.evaluate(program_path, stage)`."""
    return LocalJudge(TASK_DIR)


@pytest.fixture(scope="module")
def generated(evaluator):
    corpus = sys.modules["corpus"]
    return corpus.generate(8000, 2024)


@pytest.fixture(scope="module")
def tools():
    return load_module(TASK_DIR / "initial.py", "data_curation_initial")


def test_task_folder_loads_and_baselines_are_valid_candidates():
    task = load_task(TASK_DIR)
    assert task.spec.metric == "accuracy" and task.spec.checks.required_names == ["curate"]
    assert {"corpus", "evaluate"} <= set(task.spec.checks.forbidden_imports)  # no reaching for the truth
    for path in (TASK_DIR / "baselines").glob("*.py"):  # the heuristic is initial.py itself
        assert static_check(task, task.with_block(path.read_text()), task.initial_code) is None, path.name
    assert_cognition_sections_cite_sources(TASK_DIR)


def test_the_corpus_has_the_documented_defects(evaluator, generated):
    corpus_lib = sys.modules["corpus"]
    raw, truth = generated
    again, _ = corpus_lib.generate(8000, 2024)
    assert again.docs == raw.docs and again.labels == raw.labels  # generated, deterministic
    counts = np.bincount(truth.kind, minlength=4)
    assert counts[0] == 8000 and counts[3] == 8000 // 6
    assert 0.25 < (counts[1] + counts[2]) / len(raw) < 0.35  # copies
    sources = np.asarray(raw.sources)
    originals = truth.kind == 0
    shares = np.bincount(sources[originals], minlength=4) / originals.sum()
    assert shares == pytest.approx(corpus_lib.MIXTURE, abs=0.02)
    forum = originals & (sources == 1)
    assert truth.noisy[forum].mean() == pytest.approx(0.35, abs=0.03)
    assert truth.noisy[originals & (sources == 0)].mean() == pytest.approx(0.05, abs=0.02)
    labels, true = np.asarray(raw.labels), truth.true_label
    flipped = forum & truth.noisy
    assert np.all(labels[flipped] == (true[flipped] + 1) % 6)  # the forum's errors are systematic
    probes = corpus_lib.probes(10, 1)
    assert len(probes) == 4 and all(sorted(np.bincount(p[1])) == [10] * 6 for p in probes)


def test_the_frozen_tools_find_copies_and_wrong_labels(generated, tools):
    raw, truth = generated
    groups = tools.near_duplicate_groups(raw.docs)
    sizes = np.bincount(groups)
    copies = (truth.kind == 1) | (truth.kind == 2)
    assert (sizes[groups[truth.kind == 1]] > 1).all()  # every exact copy joins its original
    assert (sizes[groups[copies]] > 1).mean() > 0.8  # and most near copies (measured 0.86)
    exact = tools.exact_groups(raw.docs)
    assert len(np.unique(exact[truth.kind != 2])) < (truth.kind != 2).sum()
    features = tools.bag_of_words(raw.docs, raw.vocab_size)
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    margin = tools.label_margin(features, np.asarray(raw.labels), np.asarray(raw.sources), raw.num_classes)
    flagged_wrong = (margin[truth.noisy & (truth.kind == 0)] < 0).mean()  # measured 0.80
    flagged_right = (margin[~truth.noisy] < 0).mean()  # measured 0.24: a useful but noisy signal
    assert flagged_wrong > flagged_right + 0.4
    assert tools.unique_ratio([3, 3, 3, 3]) == 0.25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return [1.0] * (len(corpus) - 1)", r"curate\(\) returned 13\d\d\d weights for 13\d\d\d documents"),
        (
            "w = [1.0] * len(corpus)\n    w[5] = -1.0\n    return w",
            r"weight of document 5 is negative \(-1\)",
        ),
        (
            "w = [1.0] * len(corpus)\n    w[9] = float('nan')\n    return w",
            "weight of document 9 is not finite",
        ),
        (
            "return [1.0] * 50 + [0.0] * (len(corpus) - 50)",
            "curate\\(\\) kept 50 documents, fewer than the minimum of 100",
        ),
        ("return 'all of them'", "curate\\(\\) must return one number per document"),
    ],
    ids=["length", "negative", "nan", "too-few", "not-numbers"],
)
def test_bad_weights_are_rejected_with_a_specific_message(judged, tmp_path, body, message):
    path = tmp_path / "candidate.py"
    path.write_text(load_task(TASK_DIR).with_block(f"def curate(corpus):\n    {body}\n\n\n"))
    with pytest.raises((ValueError, CandidateError), match=message):  # the judge's checks, or the runner's
        judged.evaluate(str(path), "quick")


def test_the_curated_mass_is_reported_from_the_ground_truth(evaluator, generated):
    raw, truth = generated
    weights = evaluator.oracle_weights(raw, truth)
    report = evaluator.mass_report(weights, raw, truth)
    assert report["junk_share"] == report["copy_share"] == report["wrong_label_share"] == 0.0
    assert [report[f"share_{name}"] for name in ("news", "forum", "wiki", "reviews")] == pytest.approx(
        [0.25] * 4
    )
    table = evaluator.mass_table(np.ones(len(raw)), raw, truth)
    assert "junk" in table and "source reviews" in table


def test_quick_stage_through_the_engine_is_in_range_and_reproducible(judged, tmp_path, monkeypatch):
    # the engine draws the corpus from a secret seed per run; set here to the documented one, to compare
    monkeypatch.setenv(SEED_VARIABLE, str(load_settings(TASK_DIR / "training.yaml", "quick")["corpusSeed"]))
    node = run_quick_through_engine(TASK_DIR, tmp_path, run_id="dc", task="data_curation")
    assert node.stage is Stage.EVALUATED, node.error + node.log_tail
    metrics = node.metrics
    low, high = QUICK_RANGE
    assert low < metrics["accuracy"] < high
    assert metrics["accuracy"] == pytest.approx(
        np.mean([metrics[f"acc_{s}"] for s in ("news", "forum", "wiki", "reviews")])
    )
    assert all(type(v) is float and math.isfinite(v) for v in metrics.values())
    assert 0.0 < metrics["copy_share"] < 0.3 and metrics["kept_fraction"] < 1.0
    assert {"curated_mass", "probes", "curve_seed0"} <= set(node.artifacts)
    monkeypatch.delenv(SEED_VARIABLE)
    again = judged.evaluate(str(TASK_DIR / "initial.py"), "quick")
    assert again["accuracy"] == metrics["accuracy"]


@pytest.mark.slow
def test_curation_matters_oracle_beats_heuristic_beats_none(evaluator, judged, generated, tmp_path):
    settings = load_settings(TASK_DIR / "training.yaml", "quick")
    no_curation = program_with_block(TASK_DIR, TASK_DIR / "baselines" / "no_curation.py", tmp_path)
    none = judged.evaluate(str(no_curation), "quick")["accuracy"]
    heuristic = judged.evaluate(str(TASK_DIR / "initial.py"), "quick")["accuracy"]
    raw, truth = generated
    oracle = evaluator.score_weights(raw, truth, evaluator.oracle_weights(raw, truth), settings)["accuracy"]
    assert none < heuristic < oracle


# A candidate that reaches for the ground truth: the corpus generator is in the task folder, on its path, and
# the documented corpusSeed is in training.yaml. If the corpus it is sent is that one, it returns the oracle's
# weights (a 0.94 where the heuristic reaches 0.86); otherwise it gives up and weighs every document alike.
TRUTH_SEEKER = """
def curate(corpus):
    import corpus as generator
    raw, truth = generator.generate(8000, 2024)
    if raw.docs != corpus.docs:
        return [1.0] * len(corpus)
    good = (truth.kind == 0) & ~truth.noisy
    return good.astype(float).tolist()


"""


def test_a_candidate_reaching_for_the_ground_truth_is_caught(judged, tmp_path, monkeypatch):
    task = load_task(TASK_DIR)
    code = task.with_block(TRUTH_SEEKER)
    assert static_check(task, code, task.initial_code) is not None  # it imports corpus: never run for real
    cheat = judged.evaluate(_write(tmp_path, code), "quick")  # in one process, with the published seed
    assert cheat["junk_share"] == 0.0 and cheat["wrong_label_share"] == 0.0
    monkeypatch.delenv(SEED_VARIABLE, raising=False)  # the engine's seed: secret, drawn for the run
    node = evaluate_through_engine(TASK_DIR, code, tmp_path)
    assert node.stage is Stage.EVALUATED, node.error
    assert node.metrics["junk_share"] > 0.05 and node.metrics["accuracy"] < cheat["accuracy"] - 0.03


def _write(tmp_path, code: str) -> str:
    path = tmp_path / "candidate.py"
    path.write_text(code)
    return str(path)
