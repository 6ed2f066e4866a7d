"""benchmarks/peers.py measures every framework from the clock's logs; here its arithmetic on logs whose
figures are known, a missing peer, and one tiny real run of kubevolve alone (the peers are not installed in CI)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import peers  # noqa: E402


def evaluation(start: float, end: float, value: int) -> dict[str, float]:
    return {"start": start, "end": end, "value": value}


def test_occupancy_is_busy_slot_time_over_slot_time_between_first_start_and_last_end() -> None:
    # two slots over [10, 13]: 2 + 2 + 1 busy seconds of 6
    evaluations = [evaluation(10, 12, 1), evaluation(10, 12, 2), evaluation(12, 13, 3)]
    assert peers.occupancy(evaluations, 2) == pytest.approx(5 / 6)
    assert peers.occupancy(evaluations, 1) == pytest.approx(5 / 3)  # more work than one slot could do
    assert math.isnan(peers.occupancy([], 2))
    assert peers.most_at_once(evaluations) == 2
    assert peers.most_at_once([evaluation(0, 1, 1), evaluation(1, 2, 2)]) == 1  # back to back


def test_measure_takes_every_figure_from_the_logs() -> None:
    setting = peers.Setting(slots=2, latency=0.0, eval_seconds=0.0, candidates=3)
    requests = [
        {"t": 101.5, "role": "researcher", "parent": 0, "value": 7},
        {"t": 101.6, "role": "researcher", "parent": 0, "value": 9},
        {"t": 101.0, "role": "analyzer"},  # not a proposal: not the first LLM request
        {"t": 101.8, "role": "researcher", "parent": 9, "value": 20},
    ]
    evaluations = [
        evaluation(101.2, 101.3, 0),  # the initial program: not a child, not in occupancy
        evaluation(101.6, 101.7, 7),
        evaluation(101.7, 101.8, 9),
        evaluation(101.9, 102.0, 20),
    ]
    f = peers.measure(
        "kubevolve", setting, launched=100.0, exited=102.5, requests=requests, evaluations=evaluations
    )
    assert f.evaluated == 3
    assert f.launch_to_first_request == pytest.approx(1.5)
    assert f.shutdown == pytest.approx(0.5)
    assert f.wall == pytest.approx(2.5)
    assert f.seed_children == 2
    assert f.best == 20
    assert f.occupancy == pytest.approx(0.3 / (2 * 0.4))
    assert f.per_candidate_ms == pytest.approx(1000 * 0.5 / 3)  # first request to last end, per child
    assert f.note == ""


def test_a_framework_that_never_runs_two_evaluations_at_once_is_reported() -> None:
    setting = peers.Setting(slots=2, latency=0.5, eval_seconds=1.0, candidates=2)
    evaluations = [evaluation(1, 2, 5), evaluation(2, 3, 6)]
    f = peers.measure("openevolve", setting, 0.0, 4.0, [], evaluations)
    assert f.note == "at most 1 evaluations at once"
    assert math.isnan(f.per_candidate_ms)  # only the instant setting measures overhead
    assert "at most 1 evaluations at once" in peers.row(f)


def test_a_peer_without_its_environment_is_reported_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "PEERS", tmp_path / "no-peers")
    setting = peers.SETTINGS[0]
    for name in ("openevolve", "shinka"):
        f = peers.run(name, setting)
        assert f.note.startswith("not installed")
        line = peers.row(f)
        assert "not installed" in line and line.count("|") == peers.HEADER.count("|")
    assert peers.installed("kubevolve")


def test_the_physical_limit_row() -> None:
    line = peers.limit_row(peers.Setting(slots=4, latency=1.0, eval_seconds=2.0, candidates=24))
    assert "| physical limit | 24 | 1.00 | 12.0 / 12.0 s |" in line
    assert line.count("|") == peers.HEADER.count("|")


def test_a_tiny_kubevolve_run_is_measured_from_outside() -> None:
    setting = peers.Setting(slots=2, latency=0.0, eval_seconds=0.0, candidates=3)
    f = peers.run("kubevolve", setting, timeout=120)
    assert f.note == "", f.note
    assert f.evaluated == 3  # every child's evaluation reached the clock through the sandbox
    assert 0 < f.launch_to_first_request < f.wall
    assert 0 <= f.shutdown < f.wall
    assert 1 <= f.seed_children <= 3
    assert 0 < f.occupancy <= 1
    assert f.per_candidate_ms > 0
    assert f"| {setting} | kubevolve | 3 | — |" in peers.row(f)  # no occupancy without an evaluation cost
