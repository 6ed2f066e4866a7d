"""bubblewrap without root: a candidate's namespaces come from a keeper that first enters a user namespace of
its own (the only place an unprivileged process may create the others).

The engine's tests run as root here, so this one starts the slot's zygote as a uid of its own (allocated like
a slot's, so nothing else runs as it) with `setpriv`, and with the system Python, which an unprivileged user
can read (slots.judged_slot). The judge runs in this process, as the engine's judge worker would.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from kubevolve.loop.engineer.judge import run_job
from tests.adversarial import candidates
from tests.adversarial.harness import FAKE_KEY
from tests.adversarial.slots import judged_slot, toy_job


@pytest.fixture(scope="module")
def unprivileged_slot():
    with judged_slot(privileged=False) as slot:
        yield slot


def _evaluate(slot, judge, uid: int, code: str) -> dict:
    reply, candidate = run_job(judge, slot, toy_job(uid, code))
    candidate.close()
    slot.prepare_spare()
    return reply


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patches the judge", None),
        ("forges a result on every fd", None),
        ("imports os by a computed name and runs a shell", None),
        ("closes every fd", "exited with status 1 without a reply"),
        ("starts 100,000 threads", "can't start new thread"),
        ("signals every process it may", None),
        ("leaves files and a module for the next candidate", None),
        ("starts orphans in a new session", None),
        ("reads other processes' environments", None),
        ("fills the disk with files under the size limit", "No space left on device"),
        ("connects to a loopback service", "Network is unreachable"),
        ("segfaults", "killed by SIGSEGV"),
    ],
)
def test_hostile_candidate_without_root(unprivileged_slot, name, expected):
    slot, judge, uid = unprivileged_slot
    mark = f"kvunp{os.getpid() % 100000:05d}"
    hostile = candidates.hostile(mark, 9, FAKE_KEY)[name]
    reply = _evaluate(slot, judge, uid, hostile)
    if expected is None:
        assert reply["ok"], reply
        assert reply["result"]["f"] == pytest.approx(candidates.HONEST_SCORE)
    else:
        assert not reply["ok"] and expected in reply["error"], reply
    follower = _evaluate(slot, judge, uid, candidates.follower(mark))
    assert follower["ok"] and follower["result"]["f"] == pytest.approx(candidates.HONEST_SCORE), follower
    assert slot.zygote.alive, "the candidate reached the zygote"
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            assert Path(f"/proc/{pid}/comm").read_text().strip() != mark, "an orphan survived"
