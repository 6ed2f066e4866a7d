"""kubevolve, OpenEvolve 0.4.0 and ShinkaEvolve 0.0.7 side by side on one workload, and the physical limit.

The workload is llm_path.py's (_llm_workload.py): a program with one constant, an OpenAI-protocol server that
answers every proposal after a fixed latency with one valid SEARCH/REPLACE edit of it, an evaluator that
sleeps a fixed time and scores it. Each framework runs as a process of its own, launched by this script
(kubevolve as `kubevolve run`, each peer with its own virtual environment's Python through a driver in
peer_drivers/ that configures it by its real config API), and all are measured the same way: from the
server's request log and the evaluator's own start and end times, which the server process records on one
clock, and from the launch and exit of the framework's process. Nothing a framework reports about itself is
used.

    make peers && .venv/bin/python benchmarks/peers.py [--repeat 1] [--only kubevolve,openevolve]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _llm_workload import (  # noqa: E402
    PROGRAM,
    Server,
    load,
    openevolve_evaluator,
    shinka_evaluator,
    write_task,
)

PEERS = HERE / ".peers"  # `make peers` installs each peer's virtual environment here


@dataclass(frozen=True)
class Setting:
    slots: int  # W, evaluations at once
    latency: float  # of every LLM answer, seconds
    eval_seconds: float  # the evaluator's emulated cost
    candidates: int  # N, children of the initial program to evaluate

    @property
    def ideal(self) -> float:
        """The physical limit: N evaluations on W slots that never idle."""
        return self.candidates * self.eval_seconds / self.slots

    @property
    def instant(self) -> bool:
        return self.latency == 0 and self.eval_seconds == 0

    def __str__(self) -> str:
        return f"W={self.slots}, LLM {self.latency:g} s, eval {self.eval_seconds:g} s, N={self.candidates}"


SETTINGS = (Setting(2, 0.5, 2.0, 16), Setting(4, 1.0, 2.0, 24), Setting(2, 0.0, 0.0, 30))


@dataclass
class Figures:
    """What one run measured; `note` says why there are no figures (not installed, failed, ...)."""

    framework: str
    setting: Setting
    note: str = ""
    evaluated: int = 0  # children of the initial program evaluated (the initial program not counted)
    occupancy: float = float("nan")
    wall: float = float("nan")  # launch to exit
    per_candidate_ms: float = float("nan")
    launch_to_first_request: float = float("nan")
    shutdown: float = float("nan")  # the last evaluation's end to the process's exit
    seed_children: int = 0
    most_at_once: int = 0
    best: float = float("nan")
    load: float = float("nan")  # the machine's 1-minute load average when the run ended


def occupancy(evaluations: list[dict[str, float]], slots: int) -> float:
    """Busy slot time over slot time, from the first evaluation's start to the last one's end."""
    if not evaluations:
        return float("nan")
    start = min(e["start"] for e in evaluations)
    end = max(e["end"] for e in evaluations)
    if end <= start:
        return float("nan")
    return sum(e["end"] - e["start"] for e in evaluations) / (slots * (end - start))


def most_at_once(evaluations: list[dict[str, float]]) -> int:
    """The most evaluations running at the same moment: whether a framework used its W slots at all."""
    events = sorted([(e["start"], 1) for e in evaluations] + [(e["end"], -1) for e in evaluations])
    running = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start: back-to-back is not overlap
        running += step
        most = max(most, running)
    return most


def measure(
    framework: str,
    setting: Setting,
    launched: float,
    exited: float,
    requests: list[dict[str, Any]],
    evaluations: list[dict[str, Any]],
) -> Figures:
    """The figures of one run from the clock's logs. The initial program (VALUE 0) is evaluated alone before
    anything is proposed, so occupancy counts the children's evaluations only; a child is a child of the
    initial program when the answer that made its value was an edit of VALUE = 0."""
    proposals = [r for r in requests if r.get("role") == "researcher"]
    children = [e for e in evaluations if e["value"] != 0]
    figures = Figures(framework, setting, evaluated=len(children), wall=exited - launched)
    if proposals:
        figures.launch_to_first_request = min(r["t"] for r in proposals) - launched
    if evaluations:
        figures.shutdown = exited - max(e["end"] for e in evaluations)
        figures.best = max(float(e["value"]) for e in evaluations)
    if not children:
        figures.note = "no child was evaluated"
        return figures
    figures.occupancy = occupancy(children, setting.slots)
    figures.most_at_once = most_at_once(children)
    if figures.most_at_once < setting.slots and not setting.instant:
        figures.note = f"at most {figures.most_at_once} evaluations at once"
    from_seed = {r["value"] for r in proposals if r.get("parent") == 0}
    figures.seed_children = sum(1 for e in children if e["value"] in from_seed)
    if setting.instant and proposals:
        last = max(e["end"] for e in children)
        figures.per_candidate_ms = 1000 * (last - min(r["t"] for r in proposals)) / len(children)
    return figures


# ---- how each framework is launched ------------------------------------------------------------------------
Launch = Callable[[Setting, str, Path, Path], tuple[list[str], dict[str, str]]]  # -> argv, env


def launch_kubevolve(setting: Setting, url: str, root: Path, clock: Path) -> tuple[list[str], dict[str, str]]:
    """`kubevolve run` as a user starts it: its defaults, sandbox included, W evaluators, N + 1 candidates (the
    initial program is one)."""
    task = write_task(root / "task", setting.eval_seconds, 0.0, clock)
    spec = {
        "task": str(task),
        "llm": {"endpoint": url, "model": "fixed-latency"},
        "parallelism": {"evaluators": setting.slots},
        "budget": {"maxCandidates": setting.candidates + 1},
    }
    (root / "run.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "KUBEVOLVE_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
    return [sys.executable, "-m", "kubevolve", "run", str(root / "run.yaml"), "--json"], env


def _peer(name: str, evaluator: Callable[[float, Path], str], file: str) -> Launch:
    def launch(setting: Setting, url: str, root: Path, clock: Path) -> tuple[list[str], dict[str, str]]:
        (root / "initial.py").write_text(PROGRAM)  # the task folder holds only the clock
        (root / file).write_text(evaluator(setting.eval_seconds, clock))
        driver = HERE / "peer_drivers" / f"drive_{name}.py"
        args = [url, str(setting.slots), str(setting.candidates), str(root / "initial.py"), str(root / file)]
        python = str(PEERS / name / "bin" / "python")
        return [python, str(driver), *args, str(root / "out")], {**os.environ, "OPENAI_API_KEY": "none"}

    return launch


FRAMEWORKS: dict[str, Launch] = {
    "kubevolve": launch_kubevolve,
    "openevolve": _peer("openevolve", openevolve_evaluator, "evaluator.py"),
    "shinka": _peer("shinka", shinka_evaluator, "evaluate.py"),
}
TITLES = {"kubevolve": "kubevolve", "openevolve": "OpenEvolve 0.4.0", "shinka": "ShinkaEvolve 0.0.7"}


def installed(framework: str) -> bool:
    return framework == "kubevolve" or (PEERS / framework / ".installed").exists()


def run(framework: str, setting: Setting, *, timeout: float = 600.0) -> Figures:
    """One run of `framework` at `setting`, measured from outside."""
    if not installed(framework):
        return Figures(framework, setting, note="not installed (`make peers`)")
    with tempfile.TemporaryDirectory(prefix=f"peers-{framework}-") as tmp:
        root = Path(tmp)
        with Server(setting.latency, root, root / "task" / "clock.sock") as server:
            argv, env = FRAMEWORKS[framework](setting, server.url, root, server.clock)
            log = (root / "output.log").open("w")
            launched = time.time()
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            exited = time.time()
            log.close()
            time.sleep(0.05)  # the last datagram, if any, reaches the log
            figures = measure(framework, setting, launched, exited, server.requests(), server.evaluations())
            figures.load = os.getloadavg()[0]
            if proc.returncode != 0:
                tail = (root / "output.log").read_text().strip().splitlines()[-3:]
                figures.note = f"exit code {proc.returncode}: " + " / ".join(tail)[-300:].replace("|", "/")
            return figures


# ---- the table ----------------------------------------------------------------------------------------------
HEADER = (
    "| setting | framework | evaluated | occupancy | total wall / ideal | per-candidate overhead | launch to first "
    "LLM request | shutdown | children of the initial program | best | load average |"
)


def _seconds(value: float) -> str:
    return "—" if value != value else f"{value:.2f} s"


def row(f: Figures) -> str:
    head = f"| {f.setting} | {TITLES.get(f.framework, f.framework)} |"
    if f.note and not f.evaluated:
        return head + f" {f.note} |" + " |" * 8
    wall = f"{f.wall:.1f} / {f.setting.ideal:.1f} s" + (
        f" ({f.wall / f.setting.ideal - 1:+.0%})" if f.setting.ideal else ""
    )
    overhead = "—" if f.per_candidate_ms != f.per_candidate_ms else f"{f.per_candidate_ms:.0f} ms"
    busy = "—" if f.setting.instant else f"{f.occupancy:.2f}"  # nothing to keep busy with
    note = f" ({f.note})" if f.note else ""
    return (
        f"{head} {f.evaluated}{note} | {busy} | {wall} | {overhead} | {_seconds(f.launch_to_first_request)} | "
        f"{_seconds(f.shutdown)} | {f.seed_children} | {f.best:.0f} | {f.load:.1f} |"
    )


def limit_row(setting: Setting) -> str:
    """The physical limit: N x eval / W of wall, every slot always busy, nothing else."""
    busy = "—" if setting.instant else "1.00"
    return (
        f"| {setting} | physical limit | {setting.candidates} | {busy} | {setting.ideal:.1f} / "
        f"{setting.ideal:.1f} s | 0 ms | 0 s | 0 s | — | — | — |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(FRAMEWORKS), help="frameworks, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each framework at each setting")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    frameworks = [name for name in args.only.split(",") if name]
    unknown = [name for name in frameworks if name not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown framework {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}")
    print(f"{load()} at the start\n\n{HEADER}\n" + "|---" * HEADER.count(" | ") + "|---|", flush=True)
    for setting in SETTINGS:
        for framework in frameworks:
            for _ in range(args.repeat):
                print(row(run(framework, setting)), flush=True)
        print(limit_row(setting), flush=True)
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
