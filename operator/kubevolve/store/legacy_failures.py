"""For store migrations only: the kind of a failure stored before nodes carried one, read from its message.

Stores of schema version 1 kept only `error`, the message for people; version 2 adds `failure`, set where the
failure happens. An old failed node has nothing else to go on, so the migration to version 2 classifies its
message once, with the patterns the progress display used in version 1 (refined where one label covered
several kinds, e.g. `proposal failed`). A message none of them recognises becomes UNKNOWN. Nothing outside a
migration reads messages for their kind: a node written by version 2 or later has its kind stored.
"""

from __future__ import annotations

import json
import re

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage

FAILED_STAGES = tuple(str(s) for s in Stage if s.is_final and s is not Stage.EVALUATED)

# (pattern in the error, kind), first match wins: the messages version 1 wrote, by the module that wrote them
_PATTERNS = [
    (re.compile(r"^proposal failed: (LLM request|LLM endpoint|cannot reach the LLM)"), FailureKind.LLM_ERROR),
    (re.compile(r"^proposal failed: (the answer|the rewrite|SEARCH block)"), FailureKind.MALFORMED_ANSWER),
    (re.compile(r"^proposal failed"), FailureKind.PROPOSAL_FAILED),
    (re.compile(r"identical to"), FailureKind.DUPLICATE),
    (re.compile(r"^near-duplicate of node"), FailureKind.NEAR_DUPLICATE),
    (re.compile(r"^syntax error"), FailureKind.SYNTAX_ERROR),
    (
        re.compile(r"outside the evolve blocks|markers broken|evolve blocks, its parent"),
        FailureKind.FROZEN_CODE_EDITED,
    ),
    (re.compile(r"which the task forbids"), FailureKind.FORBIDDEN_IMPORT),
    (re.compile(r"required top-level name"), FailureKind.MISSING_NAME),
    (re.compile(r"over the task's limit"), FailureKind.PROGRAM_TOO_LARGE),
    (re.compile(r"^evaluation Job failed"), FailureKind.JOB_FAILED),
    (re.compile(r"timeout:"), FailureKind.TIMEOUT),
    (re.compile(r"memory limit"), FailureKind.MEMORY_LIMIT),
    (re.compile(r"process limit"), FailureKind.PROCESS_LIMIT),
    (re.compile(r"file size limit"), FailureKind.FILE_LIMIT),
    (re.compile(r"CPU time limit"), FailureKind.CPU_LIMIT),
    (re.compile(r"wrote outside its work dir"), FailureKind.WROTE_OUTSIDE),
    (re.compile(r"tried the network"), FailureKind.NETWORK),
    (re.compile(r"bad metrics"), FailureKind.BAD_METRICS),
    (re.compile(r"is (below|above) the threshold"), FailureKind.EARLY_REJECTION),
    (re.compile(r"sandbox setup failed"), FailureKind.SANDBOX_FAILED),
    (re.compile(r"killed by|exited with status|worker failed|not valid JSON"), FailureKind.CRASHED),
    (re.compile(r"\b[A-Z]\w*(Error|Exception|Exit|Interrupt)\b"), FailureKind.RAISED),
]


def legacy_failure(stage: str, error: str) -> FailureKind | None:
    """The kind of a version-1 node's failure; None for a node that did not fail (evaluated or proposed)."""
    if stage not in FAILED_STAGES:
        return None
    for pattern, kind in _PATTERNS:
        if pattern.search(error):
            return kind
    return FailureKind.UNKNOWN


def with_legacy_failure(data: str) -> str | None:
    """A stored node's JSON with `failure` filled in, or None when it needs no change (it has the key: it was
    written by version 2, or migrated already; so running the migration twice changes nothing)."""
    fields = json.loads(data)
    if "failure" in fields:
        return None
    kind = legacy_failure(fields.get("stage", ""), fields.get("error", ""))
    fields["failure"] = None if kind is None else str(kind)
    return json.dumps(fields)
