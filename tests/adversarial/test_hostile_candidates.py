"""Hostile candidates against the trust boundary (issue 13), in both sandbox modes.

Every hostile candidate ends as a recorded failure of a precise kind or with an honest score; an honest
neighbour evaluated at the same moment, and an honest follower in the same slot afterwards, score exactly as
they would alone; nothing outside the candidates' scratch changes; no process survives; the engine survives.

The engine under attack runs in its own process (harness.py), one run per mode for all the candidates.
Sandbox "none" runs only as root, where each slot has a uid of its own that nothing else on the machine uses:
without it, a candidate's kill(-1) would reach every process of the user running the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kubevolve.loop.engineer.sandbox import bwrap_works
from kubevolve.loop.engineer.slot_uids import SHARED_TMP, processes_of_uid
from tests.adversarial import candidates
from tests.adversarial.harness import FAKE_KEY
from tests.kit.paths import REPO
from tests.kit.toy_task import TOY_TASK_YAML, write_task

HARNESS = Path(__file__).with_name("harness.py")
MODES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here"),
    ),
    pytest.param(
        "none",
        marks=pytest.mark.skipif(
            os.geteuid() != 0, reason="sandbox 'none' isolates candidates from our processes only as root"
        ),
    ),
]
# What each candidate must end as, per mode: an honest score, or a failure whose error holds the text.
HONEST = ("score", candidates.HONEST_SCORE)
EXPECTED: dict[str, dict[str, tuple[str, object]]] = {
    "patches the judge": {"bwrap": HONEST, "none": HONEST},
    "forges a result on every fd": {"bwrap": HONEST, "none": HONEST},
    "imports os by a computed name and runs a shell": {"bwrap": HONEST, "none": HONEST},
    "signals every process it may": {"bwrap": HONEST, "none": HONEST},
    "leaves files and a module for the next candidate": {"bwrap": HONEST, "none": HONEST},
    "starts orphans in a new session": {"bwrap": HONEST, "none": HONEST},
    "reads other processes' environments": {"bwrap": HONEST, "none": HONEST},
    "fills the disk with files it deletes and keeps open": {
        "bwrap": ("failed", "No space left on device"),
        "none": ("failed", "disk quota exceeded (16 MiB"),
    },
    "fills the disk with files under the size limit": {
        "bwrap": ("failed", "No space left on device"),
        "none": ("failed", "disk quota exceeded (16 MiB"),
    },
    "segfaults": {
        "bwrap": ("failed", "killed by SIGSEGV"),
        "none": ("failed", "killed by SIGSEGV"),
    },
    "closes every fd": {
        "bwrap": ("failed", "exited with status 1 without a reply"),
        "none": ("failed", "exited with status 1 without a reply"),
    },
    "starts 100,000 threads": {
        "bwrap": ("failed", "can't start new thread"),
        "none": ("failed", "can't start new thread"),
    },
    "connects to a loopback service": {
        "bwrap": ("failed", "tried the network (evaluations have none)"),
        "none": ("failed", "tried the network (evaluations have none)"),
    },
}


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _marked(mark: str) -> list[str]:
    found = []
    for folder in SHARED_TMP:
        with contextlib.suppress(OSError):
            found += [os.path.join(folder, name) for name in os.listdir(folder) if mark in name]
    return found


def _processes_named(mark: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == mark:
                found.append(int(pid))
    return found


@pytest.fixture(scope="module", params=MODES)
def attacked(request, tmp_path_factory):
    """One engine run per mode over every hostile candidate; yields what the checks need."""
    mode = request.param
    root = tmp_path_factory.mktemp(f"adversarial-{mode}")
    yaml_text = (
        TOY_TASK_YAML.format(timeout=5)
        .replace("maxFileMb: 4}", "maxFileMb: 4, maxDiskMb: 16, maxProcesses: 32}")
        .replace("maxProcesses: 16, ", "")
    )
    task_dir = write_task(root / "toy", yaml_text=yaml_text)
    mark = f"kvadv{os.getpid() % 100000:05d}{mode[0]}"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(listener.accept())

    threading.Thread(target=accept_loop, daemon=True).start()
    spec = {
        "cases": candidates.hostile(mark, listener.getsockname()[1], FAKE_KEY),
        "honest": candidates.HONEST,
        "follower": candidates.follower(mark),
    }
    cases_path, out_path = root / "cases.json", root / "out.json"
    cases_path.write_text(json.dumps(spec))
    task_before = _tree_digest(task_dir)
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY, PYTHONPATH=f"{REPO / 'operator'}:{REPO}")
    run = subprocess.run(
        [sys.executable, str(HARNESS), mode, str(task_dir), str(cases_path), str(out_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    stop.set()
    listener.close()
    result = json.loads(out_path.read_text()) if out_path.exists() else None
    yield {
        "mode": mode,
        "run": run,
        "result": result,
        "mark": mark,
        "accepted": accepted,
        "task_changed": _tree_digest(task_dir) != task_before,
        "leftover_files": _marked(mark),
        "leftover_processes": _processes_named(mark),
        "uid_processes": [p for uid in (result or {}).get("uids", []) for p in processes_of_uid(uid)],
    }


def test_the_engine_survives_and_keeps_its_secrets(attacked):
    run = attacked["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert attacked["result"]["key_still_set"]


def test_nothing_outside_the_scratch_changes_and_no_process_survives(attacked):
    assert attacked["result"] is not None, attacked["run"].stderr[-3000:]
    assert not attacked["task_changed"], "a candidate changed the task folder"
    assert attacked["leftover_files"] == []
    assert attacked["leftover_processes"] == []
    assert attacked["uid_processes"] == []


def test_no_candidate_reaches_the_loopback(attacked):
    """bwrap: no network namespace but its own; both: socket(AF_INET/AF_INET6) refused by seccomp."""
    assert attacked["accepted"] == []


@pytest.mark.parametrize("name", list(EXPECTED))
def test_hostile_candidate_is_a_failure_or_honest_and_harms_nobody(attacked, name):
    assert attacked["result"] is not None, attacked["run"].stderr[-3000:]
    record = attacked["result"]["cases"][name]
    hostile, neighbour, follower = record["hostile"], record["neighbour"], record["follower"]
    expected, detail = EXPECTED[name][attacked["mode"]]
    if expected == "score":
        assert hostile["stage"] == "evaluated", hostile
        assert hostile["score"] == pytest.approx(detail), hostile
    else:
        assert hostile["stage"] == "failed_quick", hostile
        assert detail in hostile["error"], hostile
    for honest in (neighbour, follower):
        assert honest["stage"] == "evaluated", (name, honest)
        assert honest["score"] == pytest.approx(candidates.HONEST_SCORE), (name, honest)


def test_the_static_check_sees_the_computed_import(toy_task):
    """Defence in depth: the engine would never have run this candidate (the suite calls the pool directly)."""
    from kubevolve.core.task import load_task
    from kubevolve.loop.engineer.static_check import static_check

    task = load_task(toy_task)
    code = candidates.hostile("mark", 1, FAKE_KEY)["imports os by a computed name and runs a shell"]
    rejection = static_check(task, code, task.initial_code)
    assert rejection is not None and "computed at run time" in rejection.message


def test_every_hostile_candidate_has_an_expected_outcome():
    assert set(EXPECTED) == set(candidates.hostile("mark", 1, FAKE_KEY))
