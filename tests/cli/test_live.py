"""The live progress display: progress against the budget, an ETA, and failures by kind."""

from __future__ import annotations

import io
import re
import time
from collections import Counter

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.cli.live import ProgressDisplay, render
from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.observe.progress import RunProgress


def _progress(total: int, this_session: int, seconds: float) -> RunProgress:
    progress = RunProgress("toy-1", started=time.monotonic() - seconds)
    progress.by_stage = Counter({Stage.EVALUATED: total})
    progress.session_candidates = this_session
    return progress


def _text(panel) -> str:
    console = Console(record=True, width=100)
    console.print(panel)
    return console.export_text()


def test_the_panel_shows_candidates_of_the_budget_and_an_eta_from_this_sessions_rate():
    # resumed at 15, then 10 more in a minute: 75 to go at 10/min
    progress = _progress(total=25, this_session=10, seconds=60)
    assert progress.eta_seconds(100) == pytest.approx(450, rel=0.01)
    text = _text(render(progress, [], max_candidates=100))
    assert "25 of 100" in text and "ETA" in text and "7m 30s" in text and "10.0/min" in text


def test_no_eta_without_a_budget_or_before_this_session_committed_anything():
    assert _progress(total=25, this_session=0, seconds=60).eta_seconds(100) is None
    assert _progress(total=25, this_session=10, seconds=60).eta_seconds(None) is None
    assert _progress(total=100, this_session=10, seconds=60).eta_seconds(100) == 0
    text = _text(render(_progress(total=25, this_session=0, seconds=60), [], max_candidates=None))
    assert "candidates" in text and " of " not in text and re.search(r"ETA +— ", text)


def test_a_near_duplicate_is_counted_as_one_not_as_other():
    progress = RunProgress("toy-1")
    node = Node(run_id="toy-1", code="x = 1")
    node.fail(
        Stage.REJECTED_NOVELTY, FailureKind.NEAR_DUPLICATE, "near-duplicate of node abc (similarity 0.99)"
    )
    progress.record(node)
    text = _text(render(progress, []))
    assert "rejected_novelty: near duplicate" in text and "other" not in text


def test_plain_lines_name_the_budget_and_a_failed_runs_first_line_only():
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, width=60), max_candidates=12)
    progress = _progress(total=3, this_session=3, seconds=6)
    progress.message = "cannot import the evaluator /t/evaluate.py: ZeroDivisionError\n  File ..."
    display(progress, None)
    [line] = out.getvalue().splitlines()  # never broken at the console's width, the traceback left out
    assert line.startswith("[toy-1] candidates=3 of 12 ") and "eta=18s" in line
    assert line.endswith("· cannot import the evaluator /t/evaluate.py: ZeroDivisionError")


def test_kubevolve_run_reports_progress_against_max_candidates(toy_task):
    result = CliRunner().invoke(app, ["run", str(toy_task), "--max-candidates", "5", "--json"])
    assert result.exit_code == 0
    assert "candidates=5 of 5 " in result.stderr and "eta=0s" in result.stderr
