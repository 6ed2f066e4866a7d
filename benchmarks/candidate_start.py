"""Per-candidate start cost in bubblewrap: from the judge's spawn to the candidate's first answer (its
program loaded, one request served), with no spare process started ahead, so the whole set-up of its
namespaces (pid, mount, IPC, network), scratch tmpfs, uid and seccomp filter is on the clock. Measured for
both ways a zygote makes namespaces: as root (the candidate forked straight into them) and as an unprivileged
uid (a keeper in a user namespace of its own; the zygote then runs as a slot uid with the system Python),
for an isolated stage and a `network: ranks` one (its loopback brought up). Needs root and bubblewrap.

    python benchmarks/candidate_start.py [--candidates 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.adversarial.slots import judged_slot, toy_job  # noqa: E402

from kubevolve.loop.engineer.candidate_process import CandidateProcess  # noqa: E402

WARM_UP = 5
PROGRAM = "def solve():\n    return 3.0, -1.0\n"


def measure(privileged: bool, network: str, candidates: int) -> list[float]:
    with judged_slot(privileged=privileged) as (slot, _, uid):
        slot.prepare_spare = lambda: None  # type: ignore[method-assign]  # every start on the clock
        times = []
        for _ in range(candidates + WARM_UP):
            candidate = CandidateProcess(slot, toy_job(uid, PROGRAM, network=network), time.monotonic() + 10)
            slot.await_killed()
            started = time.perf_counter()
            assert candidate.request({}) == {"x": 3.0, "y": -1.0}
            times.append(time.perf_counter() - started)
            candidate.close()
    return sorted(times[WARM_UP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=200)
    args = parser.parse_args()
    table = Table(title="candidate start, spawn to first answer")
    for column in ("zygote", "network", "mean", "p50", "p90"):
        table.add_column(column, justify="right")
    for privileged in (True, False):
        for network in ("isolated", "ranks"):
            times = measure(privileged, network, args.candidates)
            table.add_row(
                "root" if privileged else "unprivileged",
                network,
                *(
                    f"{value * 1e3:.2f} ms"
                    for value in (
                        statistics.mean(times),
                        times[len(times) // 2],
                        times[int(len(times) * 0.9)],
                    )
                ),
            )
    Console().print(table)


if __name__ == "__main__":
    main()
