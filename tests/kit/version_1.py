"""What version 1 of the stores held (schema version 1, before nodes carried a FailureKind): the messages it
wrote, verbatim, and a node's JSON as its codec stored it. The migration tests of both stores read these; they
are a historical record and must not follow later changes of wording or of the Node model."""

from __future__ import annotations

from typing import Any

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage

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


def version_1_node(node_id: str, stage: Stage, error: str) -> dict[str, Any]:
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
