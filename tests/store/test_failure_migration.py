"""Stores written before nodes carried a FailureKind (schema version 1) open, and their failed nodes get one.

Version 1 stored only the message, so the migration classifies it once (`store/legacy_failures.py`). The
messages here are the ones version 1 wrote, verbatim: they are the historical record the migration reads, and
they must not follow later changes of wording (new nodes carry their kind and are never classified).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage, code_hash
from kubevolve.store import SCHEMA_VERSION, SQLiteStore
from kubevolve.store.legacy_failures import legacy_failure, with_legacy_failure
from kubevolve.store.sqlite import schema

Q, F = Stage.FAILED_QUICK, Stage.FAILED_FULL
LLM = (
    "proposal failed: LLM request to http://llm:8000/v1 (m) failed with HTTP 500 after 4 retries: overloaded"
)
VERSION_1_MESSAGES = [
    # the first seven are the examples the version-1 progress display was tested with ("other" is now UNKNOWN)
    (Stage.REJECTED_NOVELTY, "identical to node 0123abcd (same program text)", FailureKind.DUPLICATE),
    (Q, "quick stage: timeout: evaluation exceeded 3s wall clock and was killed", FailureKind.TIMEOUT),
    (Q, "quick stage: sum_radii = 0.96 is below the threshold 1", FailureKind.EARLY_REJECTION),
    (F, "full stage: ValueError: circles 3 and 7 overlap by 1e-3", FailureKind.RAISED),
    (Q, "quick stage: memory limit exceeded (256 MiB): MemoryError: ", FailureKind.MEMORY_LIMIT),
    (Stage.REJECTED_STATIC, "syntax error at line 12: invalid syntax", FailureKind.SYNTAX_ERROR),
    (Q, "quick stage: something odd", FailureKind.UNKNOWN),
    (Stage.REJECTED_STATIC, LLM, FailureKind.LLM_ERROR),
    (
        Stage.REJECTED_STATIC,
        "proposal failed: cannot reach the LLM endpoint http://llm:8000/v1: Connection error.",
        FailureKind.LLM_ERROR,
    ),
    (
        Stage.REJECTED_STATIC,
        "proposal failed: the answer has no 'MOTIVATION:' line saying what is changed and why",
        FailureKind.MALFORMED_ANSWER,
    ),
    (
        Stage.REJECTED_STATIC,
        "proposal failed: SEARCH block 2 not found in parent",
        FailureKind.MALFORMED_ANSWER,
    ),
    (
        Stage.REJECTED_STATIC,
        "proposal failed: offline proposer: no usable change in 64 attempts (no change)",
        FailureKind.PROPOSAL_FAILED,
    ),
    (
        Stage.REJECTED_NOVELTY,
        "near-duplicate of node 9f8e (embedding similarity 0.9912 >= noveltyThreshold 0.98)",
        FailureKind.NEAR_DUPLICATE,
    ),
    (Stage.REJECTED_NOVELTY, "identical to a candidate already being evaluated", FailureKind.DUPLICATE),
    (
        Stage.REJECTED_STATIC,
        "code changed outside the evolve blocks (before the first evolve block)",
        FailureKind.FROZEN_CODE_EDITED,
    ),
    (
        Stage.REJECTED_STATIC,
        "evolve-block markers broken: line 7: # EVOLVE-BLOCK-END without a matching # EVOLVE-BLOCK-START",
        FailureKind.FROZEN_CODE_EDITED,
    ),
    (Stage.REJECTED_STATIC, "the program has 2 evolve blocks, its parent 1", FailureKind.FROZEN_CODE_EDITED),
    (Stage.REJECTED_STATIC, "imports 'socket', which the task forbids", FailureKind.FORBIDDEN_IMPORT),
    (Stage.REJECTED_STATIC, "required top-level name(s) missing: solve", FailureKind.MISSING_NAME),
    (
        Stage.REJECTED_STATIC,
        "program is 420086 bytes, over the task's limit of 200000",
        FailureKind.PROGRAM_TOO_LARGE,
    ),
    (Q, "evaluation Job failed 2 times (last: BackoffLimitExceeded: OOMKilled)", FailureKind.JOB_FAILED),
    (Q, "quick stage: CPU time limit exceeded (4s)", FailureKind.CPU_LIMIT),
    (
        Q,
        "quick stage: process limit reached (16 processes): BlockingIOError: [Errno 11] Resource temporarily "
        "unavailable",
        FailureKind.PROCESS_LIMIT,
    ),
    (Q, "quick stage: file size limit exceeded (4 MiB)", FailureKind.FILE_LIMIT),
    (
        Q,
        "quick stage: wrote outside its work dir (the sandbox is read-only there): OSError: [Errno 30] "
        "Read-only file system: '/opt/x'",
        FailureKind.WROTE_OUTSIDE,
    ),
    (
        Q,
        "quick stage: tried the network (evaluations have none): URLError: <urlopen error [Errno 101] Network "
        "is unreachable>",
        FailureKind.NETWORK,
    ),
    (Q, "quick stage: bad metrics: metric 'f' is not finite (nan)", FailureKind.BAD_METRICS),
    (F, "full stage: loss = 9.5 is above the threshold 5", FailureKind.EARLY_REJECTION),
    (
        Q,
        "quick stage: sandbox setup failed: PermissionError: [Errno 1] Operation not permitted",
        FailureKind.SANDBOX_FAILED,
    ),
    (Q, "quick stage: evaluation process killed by SIGSEGV", FailureKind.CRASHED),
    (Q, "quick stage: evaluation process killed by SIGKILL (probably out of memory)", FailureKind.CRASHED),
    (Q, "quick stage: evaluation process exited with status 3 without a result", FailureKind.CRASHED),
    (Q, "quick stage: evaluation worker failed: hung", FailureKind.CRASHED),
    (Q, "quick stage: the evaluation result was not valid JSON", FailureKind.CRASHED),
    (Q, "quick stage: WeirdCandidateError: the candidate's own class", FailureKind.RAISED),
    (Stage.EVALUATED, "", None),
    (Stage.PROPOSED, "", None),
]


@pytest.mark.parametrize(("stage", "error", "kind"), VERSION_1_MESSAGES)
def test_version_1_messages_are_classified_once(stage: Stage, error: str, kind: FailureKind | None) -> None:
    assert legacy_failure(str(stage), error) is kind


def test_every_kind_has_a_version_1_message() -> None:
    assert {kind for _, _, kind in VERSION_1_MESSAGES} == {*FailureKind, None}


def test_a_node_that_has_its_kind_is_never_reclassified() -> None:
    written = json.dumps({"stage": "failed_quick", "error": "quick stage: timeout: 3s", "failure": "raised"})
    assert with_legacy_failure(written) is None
    assert json.loads(with_legacy_failure(json.dumps({"stage": "evaluated", "error": ""})) or "") == {
        "stage": "evaluated",
        "error": "",
        "failure": None,
    }


# ---- a SQLite file as version 1 wrote it -----------------------------------------------------------------
def version_1_node(node_id: str, stage: Stage, error: str) -> dict:
    """A node's JSON with exactly the fields version 1's Node had (no `failure`), as its codec stored it."""
    return {
        "run_id": "old",
        "code": f"x = {node_id!r}",
        "id": node_id,
        "parent_ids": [],
        "inspiration_ids": [],
        "island": 0,
        "generation": 1,
        "motivation": "",
        "diff": "",
        "metrics": {"f": 1.0} if stage is Stage.EVALUATED else {},
        "score": 1.0 if stage is Stage.EVALUATED else None,
        "stage": str(stage),
        "error": error,
        "log_tail": "",
        "artifacts": {},
        "insight_id": None,
        "proposer": "offline",
        "retry_of": None,
        "attempt": 0,
        "transcript": [],
        "timings": {},
        "llm": {},
        "created_at": 1700000000.0 + len(node_id),
    }


def write_version_1_file(path: Path, nodes: list[dict]) -> None:
    """The schema of version 1 (its migration, which never changes) and its rows, written with plain SQL."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for statement in schema.MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        for seq, node in enumerate(nodes):
            conn.execute(
                "INSERT INTO nodes (tenant, id, run_id, seq, stage, score, island, code_hash, data, embedding)"
                " VALUES ('default', ?, 'old', ?, ?, ?, 0, ?, ?, NULL)",
                (node["id"], seq, node["stage"], node["score"], code_hash(node["code"]), json.dumps(node)),
            )
    conn.close()


def stored_data(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT id, data FROM nodes").fetchall())
    finally:
        conn.close()


def test_a_version_1_file_opens_with_the_kinds_of_its_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "MIGRATION_BATCH", 4)  # several batches: none is skipped or done twice
    path = tmp_path / "v1.db"
    rows = [
        version_1_node(f"n{i:02d}", stage, error) for i, (stage, error, _) in enumerate(VERSION_1_MESSAGES)
    ]
    write_version_1_file(path, rows)
    before = stored_data(path)

    store = SQLiteStore(path)
    nodes = {n.id: n for n in store.list_nodes("old")}
    assert [nodes[f"n{i:02d}"].failure for i in range(len(rows))] == [k for _, _, k in VERSION_1_MESSAGES]
    assert [nodes[f"n{i:02d}"].error for i in range(len(rows))] == [e for _, e, _ in VERSION_1_MESSAGES]
    counts = store.count_nodes("old")
    assert counts[Stage.FAILED_QUICK] == sum(1 for s, _, _ in VERSION_1_MESSAGES if s is Stage.FAILED_QUICK)
    store.close()

    after = stored_data(path)
    unchanged = {r["id"] for r in rows if r["stage"] in ("evaluated", "proposed")}
    assert {i for i in before if before[i] == after[i]} == unchanged  # only failed nodes were rewritten
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    conn.close()
    SQLiteStore(path).close()  # opening again migrates nothing twice
    assert stored_data(path) == after
