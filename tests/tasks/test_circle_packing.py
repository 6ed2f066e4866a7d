"""The circle-packing task: the task folder loads, the initial program scores in its documented range, the
judge rejects every kind of invalid packing with a message that names the problem, and a candidate that
forges its score through the engine is caught.

Most tests run the judge and the runner in this process (`evaluate_unsandboxed`): the same data crosses the
same channel, without the sandbox's start-up. The engine tests go through the real boundary."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kubevolve.core.models import Node, Stage
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.sdk.judging import CandidateError, LocalJudge, evaluate_unsandboxed
from tests.kit.paths import REPO
from tests.kit.task_checks import assert_cognition_sections_cite_sources, evaluate_through_engine

TASK_DIR = REPO / "tasks" / "circle_packing"
INITIAL_RANGE = (1.5, 2.2)  # documented in tasks/circle_packing/README.md (measured: 1.9253)


def load_evaluator() -> LocalJudge:
    """The task's judge and runner in this process: `.evaluate(program_path, stage)`."""
    return LocalJudge(TASK_DIR)


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator()


# A valid packing to break: a 5 x 5 grid of radius 0.1 and a small circle in the gap at (0.2, 0.2).
VALID_PACKING = """
import numpy as np

def packing():
    grid = (np.arange(5) * 0.2 + 0.1).tolist()
    centers = [(x, y) for y in grid for x in grid] + [(0.2, 0.2)]
    radii = [0.1] * 25 + [0.1 * 2 ** 0.5 - 0.1]
    return np.array(centers), np.array(radii)
"""
VALID_SUM = 2.5 + 0.1 * math.sqrt(2) - 0.1


def write_program(tmp_path: Path, body: str) -> str:
    """A candidate whose run_packing() takes the valid packing and applies `body` (which may edit
    `centers`, `radii` and `reported`) before returning it."""
    path = tmp_path / "candidate.py"
    path.write_text(
        VALID_PACKING
        + "\n\ndef run_packing():\n    centers, radii = packing()\n    reported = float(radii.sum())\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n    return centers, radii, reported\n"
    )
    return str(path)


def test_task_folder_loads():
    task = load_task(TASK_DIR)
    assert task.spec.metric == "sum_radii"
    assert task.spec.direction == "maximize"
    assert task.spec.reference_score == 2.635
    assert set(task.stage_names) == {"quick", "full"}
    assert "run_packing" in task.spec.checks.required_names
    assert {"socket", "subprocess"} <= set(task.spec.checks.forbidden_imports)
    assert len(task.split(task.initial_code).blocks) == 1
    cognition = list((TASK_DIR / task.spec.cognition).glob("*.md"))
    assert cognition


def test_cognition_sections_have_titles_and_sources():
    assert_cognition_sections_cite_sources(TASK_DIR)


@pytest.mark.parametrize("stage", ["quick", "full"])
def test_initial_program_scores_in_documented_range(evaluator, stage):
    metrics = evaluator.evaluate(str(TASK_DIR / "initial.py"), stage)
    low, high = INITIAL_RANGE
    assert low < metrics["sum_radii"] < high
    assert metrics["target_ratio"] == pytest.approx(metrics["sum_radii"] / 2.635)
    task = load_task(TASK_DIR)
    for axis in task.spec.sampler.features:
        assert axis.min <= metrics[axis.name] <= axis.max, f"feature {axis.name} outside its range"
    for key, value in metrics.items():
        if key == "artifacts":
            assert isinstance(value["summary"], str) and "sum of radii" in value["summary"]
        else:
            assert type(value) is float and math.isfinite(value), key


def test_valid_packing_is_accepted_and_the_sum_recomputed(evaluator, tmp_path):
    path = write_program(tmp_path, "reported = 100.0")
    metrics = evaluator.evaluate(path, "full")
    assert metrics["sum_radii"] == pytest.approx(VALID_SUM, abs=1e-12)
    assert metrics["min_radius"] == pytest.approx(0.1 * math.sqrt(2) - 0.1)
    assert metrics["max_radius"] == pytest.approx(0.1)


def test_touching_within_tolerance_is_accepted(evaluator, tmp_path):
    path = write_program(tmp_path, "radii[0] += 5e-13")  # circle 0 pokes into circle 1 and the walls by 5e-13
    assert evaluator.evaluate(path, "quick")["sum_radii"] > 2.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("centers[7, 0] -= 0.002", "circles 6 and 7 overlap by 2.000e-03"),
        ("centers[25] = centers[12]", "circles 12 and 25 overlap by 1.414e-01"),
        ("centers[5, 0] -= 0.01", "circle 5 leaves the square at the left edge by 1.000e-02"),
        ("centers[9, 0] += 0.01", "circle 9 leaves the square at the right edge by 1.000e-02"),
        ("centers[2, 1] -= 0.02", "circle 2 leaves the square at the bottom edge by 2.000e-02"),
        ("centers[22, 1] += 0.02", "circle 22 leaves the square at the top edge by 2.000e-02"),
        ("radii[25] = -0.01", "circle 25 has a negative radius -1.000e-02"),
        ("radii[7] = float('nan')", "circle 7 has a non-finite radius"),
        ("centers[8, 1] = float('inf')", "circle 8 has a non-finite centre"),
        ("centers = centers[:25]", "centers must have shape (26, 2), got (25, 2)"),
        ("radii = radii.reshape(26, 1)", "radii must have shape (26,), got (26, 1)"),
        ("return centers, radii", "run_packing() must return a tuple (centers, radii, sum_radii)"),
    ],
)
def test_invalid_packings_are_rejected_with_a_specific_message(evaluator, tmp_path, body, message):
    path = write_program(tmp_path, body)
    with pytest.raises((ValueError, CandidateError)) as raised:  # the judge's checks, or the runner's
        evaluator.evaluate(path, "quick")
    assert message in str(raised.value)


def test_missing_entry_point_is_rejected(evaluator, tmp_path):
    path = tmp_path / "candidate.py"
    path.write_text("def construct():\n    return None\n")
    with pytest.raises(CandidateError, match="the program defines no run_packing"):
        evaluator.evaluate(str(path), "quick")


def test_full_stage_rejects_an_irreproducible_program(evaluator, tmp_path):
    path = write_program(tmp_path, "import random\nradii[25] *= random.random()")
    evaluator.evaluate(path, "quick")  # a single run is valid
    with pytest.raises(ValueError, match="not reproducible"):
        evaluator.evaluate(path, "full")


def test_unknown_stage_is_an_error(evaluator):
    with pytest.raises(ValueError, match="unknown stage"):
        evaluator.evaluate(str(TASK_DIR / "initial.py"), "medium")


def test_patching_numpy_does_not_weaken_the_checker(evaluator, tmp_path):
    original = np.isfinite
    path = write_program(
        tmp_path, "np.isfinite = lambda a, *args, **kw: np.ones(np.shape(a), bool)\nradii[0] = float('nan')"
    )
    try:
        with pytest.raises(ValueError, match="circle 0 has a non-finite radius"):
            evaluator.evaluate(path, "quick")
    finally:
        np.isfinite = original


def test_initial_program_is_fast():
    """The quick stage budget assumes the initial program runs well under a second."""
    import time

    evaluator = load_evaluator()
    start = time.perf_counter()
    evaluator.evaluate(str(TASK_DIR / "initial.py"), "quick")
    assert time.perf_counter() - start < 1.0


# The attack of issue 13 as a twelve-line block without an import: walk up the stack from the candidate's own
# function into the evaluator, replace its check and the radius function, and claim radii of 0.5 (a sum of
# 13.0, where 2.636 is the physical maximum). In the judge's process it worked; across the boundary the
# patches land in the candidate's own process and the judge's check sees 26 overlapping circles.
FORGER = """
def place_circles():
    try:
        raise RuntimeError
    except RuntimeError as err:
        frame = err.__traceback__.tb_frame
    while frame is not None:
        frame.f_globals["check_packing"] = lambda centers, radii: None
        frame.f_globals["max_radii"] = lambda centers, hint=None: np.full(len(centers), 0.5)
        frame = frame.f_back
    return np.full((N_CIRCLES, 2), 0.5), None
"""


def _through_the_engine(tmp_path: Path, code: str, stages: tuple[str, ...] = ("quick",)) -> Node:
    """Evaluate `code` as the engine does: the judge in its process, the candidate sandboxed."""
    return evaluate_through_engine(TASK_DIR, code, tmp_path, stages)


def test_a_candidate_forging_its_score_is_caught(tmp_path):
    task = load_task(TASK_DIR)
    code = task.with_block(FORGER)
    node = _through_the_engine(tmp_path, code)
    assert node.stage is Stage.FAILED_QUICK, (node.score, node.error)
    assert "circles 0 and 1 overlap by 1.000e+00" in node.error
    assert node.score is None
    # and the static check, defence in depth, would not have let it run
    rejection = static_check(task, code, task.initial_code)
    assert rejection is not None and "computed at run time" in rejection.message


def test_the_initial_program_scores_the_same_across_the_boundary(tmp_path):
    node = _through_the_engine(tmp_path, load_task(TASK_DIR).initial_code, ("quick", "full"))
    assert node.stage is Stage.EVALUATED, node.error
    in_process = evaluate_unsandboxed(TASK_DIR, TASK_DIR / "initial.py", "full")
    assert node.metrics["sum_radii"] == in_process["sum_radii"]
    assert node.metrics["sum_radii"] == pytest.approx(1.9253, abs=5e-5)  # documented in the README
