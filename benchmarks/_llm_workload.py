"""The workload of the LLM-path benchmarks (llm_path.py, peers.py): a program with one constant, an evaluator of
emulated cost that scores it, and a local OpenAI-protocol server of fixed latency that answers every proposal
request with one valid SEARCH/REPLACE edit of that constant.

The server runs in a process of its own (so that it takes no GIL from the engine measured) and is also the
benchmark's clock: it logs every request it answers, and every evaluation's own start and end, which the
evaluator sends it as a datagram over a Unix socket in the task folder (a path the sandbox lets the evaluator
see; a datagram needs no write access to the file system). So every framework is measured by the same
process, on the same clock, and not by its own reports.

    python benchmarks/_llm_workload.py serve --latency 0.5 --dir DIR   (what `Server` starts)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PROGRAM = "# EVOLVE-BLOCK-START\nVALUE = 0\n# EVOLVE-BLOCK-END\n"

# what every framework's evaluator runs: read VALUE, spend the emulated cost, report start and end to the
# clock (when there is one), score VALUE; each framework adds its own entry point (`kubevolve_evaluator`, ...)
EVALUATOR_CORE = """\
import json
import random
import socket
import time

CLOCK = {clock!r}


def score(program_path):
    start = time.time()
    value = int(open(program_path).read().split("VALUE = ")[1].split()[0])
    seconds = {seconds} * (1.0 + {jitter} * random.Random(value).uniform(-1.0, 1.0))
    if seconds > 0:
        time.sleep(seconds)
    if CLOCK:
        report = json.dumps({{"start": start, "end": time.time(), "value": value}}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as clock:
            clock.sendto(report, CLOCK)
    return float(value)
"""

# the parent's code follows a "# Current program" heading in kubevolve's Researcher prompt ("# Current
# program (score 3)"), OpenEvolve's ("# Current Program") and ShinkaEvolve's ("# Current program"), not in
# OpenEvolve's "# Current Program Information"
PARENT_VALUE = re.compile(r"# Current program(?: \([^\n]*\))?\n.*?```\w*\n.*?VALUE = (-?\d+)", re.S | re.I)


def value_of(code: str) -> int:
    return int(code.split("VALUE = ")[1].split()[0])


def evaluator_source(eval_seconds: float, jitter: float = 0.0, clock: Path | None = None) -> str:
    return EVALUATOR_CORE.format(seconds=eval_seconds, jitter=jitter, clock=str(clock) if clock else "")


def kubevolve_evaluator(eval_seconds: float, jitter: float = 0.0, clock: Path | None = None) -> str:
    """evaluate.py of a kubevolve task (docs/tasks.md)."""
    entry = '\n\ndef evaluate(program_path, stage):\n    return {"score": score(program_path)}\n'
    return evaluator_source(eval_seconds, jitter, clock) + entry


def openevolve_evaluator(eval_seconds: float, clock: Path | None = None) -> str:
    """OpenEvolve's evaluation file: evaluate(program_path) -> metrics, `combined_score` the one it ranks by."""
    entry = '\n\ndef evaluate(program_path):\n    return {"combined_score": score(program_path)}\n'
    return evaluator_source(eval_seconds, 0.0, clock) + entry


def shinka_evaluator(eval_seconds: float, clock: Path | None = None) -> str:
    """ShinkaEvolve's evaluation script: run as `python evaluate.py --program_path P --results_dir D`, it
    writes metrics.json (`combined_score`) and correct.json into D."""
    entry = """

if __name__ == "__main__":
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", required=True)
    parser.add_argument("--results_dir", required=True)
    args = parser.parse_args()
    value = score(args.program_path)
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, "metrics.json"), "w") as out:
        json.dump({"combined_score": value, "public": {}, "private": {}}, out)
    with open(os.path.join(args.results_dir, "correct.json"), "w") as out:
        json.dump({"correct": True, "error": None}, out)
"""
    return evaluator_source(eval_seconds, 0.0, clock) + entry


TASK_YAML = """\
name: llm_path
description: A benchmark task whose evaluator takes a fixed time and scores the program's one constant.
metric: score
stages:
  quick: {timeoutSeconds: 120, resources: {memoryMb: 512}}
checks: {requiredNames: [VALUE]}
sampler: {kind: greedy, numInspirations: 0}
"""


def write_task(root: Path, eval_seconds: float, jitter: float, clock: Path | None = None) -> Path:
    """The kubevolve task folder of the workload."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(TASK_YAML)
    (root / "initial.py").write_text(PROGRAM)
    (root / "evaluate.py").write_text(kubevolve_evaluator(eval_seconds, jitter, clock))
    return root


def answer_text(parent: int, value: int) -> str:
    """One valid edit of the constant, in a form all three frameworks parse: kubevolve reads the MOTIVATION
    line, ShinkaEvolve the NAME and DESCRIPTION tags, and all three the SEARCH/REPLACE block."""
    edit = f"<<<<<<< SEARCH\nVALUE = {parent}\n=======\nVALUE = {value}\n>>>>>>> REPLACE\n"
    return (
        f"<NAME>\nvalue_{value}\n</NAME>\n<DESCRIPTION>\nTry VALUE = {value}.\n</DESCRIPTION>\n"
        f"MOTIVATION: try VALUE = {value} (a step of {value - parent}).\n<DIFF>\n{edit}</DIFF>\n"
    )


# ---- the server and clock, in its own process --------------------------------------------------------------
def serve(latency: float, folder: Path, clock_path: Path) -> None:
    """Answer after `latency` seconds: an insight to kubevolve's Analyzer, one constant edit to anything else;
    log each request (`requests.jsonl`) and each evaluation the clock socket receives (`evaluations.jsonl`)."""
    sys.path.insert(0, str(REPO / "tests" / "kit"))  # the OpenAI-protocol server of the tests
    from openai_server import OpenAIServer, Reply

    log = (folder / "requests.jsonl").open("a", buffering=1)
    lock = threading.Lock()
    given: set[int] = set()  # every value answered so far

    def child_value(parent: int, index: int) -> int:
        """Better than its parent and never answered before: a stream of distinct experiments, so that every
        novelty rejection is a false one and no run loses a budgeted candidate to a genuine repeat."""
        rng = random.Random(index)
        with lock:
            value = parent + rng.randint(1, 1000)
            while value in given:
                value = parent + rng.randint(1, 1000 + len(given))
            given.add(value)
        return value

    def answer(body: dict[str, Any], index: int) -> Reply:
        arrived = time.time()
        system = body["messages"][0]["content"]
        if system.startswith("You are the Analyzer"):
            with lock:
                log.write(json.dumps({"t": arrived, "role": "analyzer"}) + "\n")
            return Reply(f"INSIGHT: candidate {index} changed VALUE; the score follows VALUE.", delay=latency)
        match = PARENT_VALUE.search(body["messages"][-1]["content"])
        parent = int(match.group(1)) if match else 0
        value = child_value(parent, index)  # better than its parent: greedy follows
        with lock:
            log.write(
                json.dumps({"t": arrived, "role": "researcher", "parent": parent, "value": value}) + "\n"
            )
        return Reply(answer_text(parent, value), delay=latency)

    clock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    clock.bind(str(clock_path))
    os.chmod(clock_path, 0o777)  # a sandboxed evaluator runs as another uid
    evaluations = (folder / "evaluations.jsonl").open("a", buffering=1)
    with OpenAIServer(answer) as server:
        (folder / "url").write_text(server.url)
        while True:
            evaluations.write(clock.recv(65536).decode() + "\n")


class Server:
    """The server and clock process: `url`, `clock` (the socket path an evaluator reports to), and what it
    logged (`requests()`, `evaluations()`) in `folder`. `clock` must lie where the evaluators can see it:
    kubevolve's sandbox shows the task folder and hides /tmp around it."""

    def __init__(self, latency: float, folder: Path | None = None, clock: Path | None = None):
        self.dir = folder or Path(tempfile.mkdtemp(prefix="kubevolve-llm-"))
        self.clock = clock or self.dir / "clock.sock"
        for path in (self.dir, self.clock.parent):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)  # mkdtemp's 0700 would keep a sandboxed evaluator's uid from the socket
        command = [sys.executable, __file__, "serve", "--latency", str(latency), "--dir", str(self.dir)]
        command += ["--clock", str(self.clock)]
        self.proc = subprocess.Popen(command)
        deadline = time.monotonic() + 30
        url = self.dir / "url"
        while not url.exists() or not url.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("the LLM server did not start")
            time.sleep(0.02)
        self.url = url.read_text()

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def requests(self) -> list[dict[str, Any]]:
        return self._read("requests.jsonl")

    def evaluations(self) -> list[dict[str, Any]]:
        return self._read("evaluations.jsonl")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["serve"])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--clock", type=Path, required=True)
    args = parser.parse_args()
    serve(args.latency, args.dir, args.clock)


if __name__ == "__main__":
    main()
