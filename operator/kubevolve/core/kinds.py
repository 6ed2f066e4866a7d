"""The closed sets the loop and its runtimes agree on, as enums: a typo is an error, not a silent new label."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """An engine step, as `kubevolve step ROLE` runs it and as a Job's `kubevolve.io/role` label names it."""

    PROPOSE = "propose"
    EVALUATE = "evaluate"
    ANALYZE = "analyze"


class FailureKind(StrEnum):
    """Why a candidate did not get a score: set where the failure happens, stored on the node (`Node.failure`)
    and counted by dashboards, the report and the progress display. The node's `error` says the same for a
    person, with the details; this is the bounded label for machines. `words` is how a person reads it."""

    # the static checks (rejected_static)
    PROGRAM_TOO_LARGE = "program_too_large"  # over the task's checks.maxCodeBytes
    SYNTAX_ERROR = "syntax_error"  # does not parse
    FROZEN_CODE_EDITED = "frozen_code_edited"  # changed code outside the evolve blocks or broke their markers
    FORBIDDEN_IMPORT = "forbidden_import"  # imports a module the task forbids
    MISSING_NAME = "missing_name"  # lacks a top-level name the task requires
    # the proposal (rejected_static: there is no program to evaluate)
    LLM_ERROR = "llm_error"  # the LLM endpoint failed (HTTP error, timeout, refused connection, no choices)
    MALFORMED_ANSWER = "malformed_answer"  # the LLM answered, but not in the edit format, or its edits miss
    PROPOSAL_FAILED = "proposal_failed"  # a proposer without an LLM found no usable change
    # the optional LLM judge (rejected_static: refused before evaluation, its reason in the node's error)
    LLM_JUDGE_REJECTED = (
        "llm_judge_rejected"  # the judge (llmJudge) found it not new or against the task's rules
    )
    # novelty (rejected_novelty)
    DUPLICATE = "duplicate"  # the same program text as a stored candidate or one being evaluated
    # the same experiment as one run or being evaluated: the same program once formatting, comments, docstrings
    # and local names are set aside (the novelty filter, loop/engineer/novelty.py); a changed constant is not
    NEAR_DUPLICATE = "near_duplicate"
    # evaluation (failed_quick / failed_full)
    TIMEOUT = "timeout"  # ran past the stage's wall-clock timeout and was killed
    CPU_LIMIT = "cpu_limit"  # killed by SIGXCPU: used up its CPU seconds
    MEMORY_LIMIT = "memory_limit"  # raised MemoryError under the stage's memory limit
    PROCESS_LIMIT = "process_limit"  # fork or thread creation failed with EAGAIN: the process limit
    FILE_LIMIT = "file_limit"  # wrote a file over the stage's maxFileMb (EFBIG or killed by SIGXFSZ)
    WROTE_OUTSIDE = "wrote_outside"  # wrote outside its work dir: EROFS, the sandbox is read-only there
    NETWORK = "network"  # tried the network, which evaluations do not have (ENETUNREACH, no DNS)
    RAISED = "raised"  # the program (or the evaluator on it) raised any other exception
    CRASHED = "crashed"  # killed by a signal, exited without a result, a garbled result, a hung worker
    DISK_QUOTA = (
        "disk_quota"  # its files together passed the stage's maxDiskMb (ENOSPC, or the quota watcher)
    )
    PROTOCOL_VIOLATION = "protocol_violation"  # sent its judge malformed or oversized data (judged tasks)
    SANDBOX_FAILED = "sandbox_failed"  # the sandbox could not be set up for the evaluation (not the program)
    JOB_FAILED = "job_failed"  # on Kubernetes: the evaluation Job failed every attempt without a result
    BAD_METRICS = "bad_metrics"  # evaluate() returned something that is not a valid metrics dict
    EARLY_REJECTION = "early_rejection"  # a metric crossed a rejectBelow / rejectAbove bound of the stage
    # stores written before kinds existed
    UNKNOWN = "unknown"  # a failure whose kind is not known: recorded before kinds, matching none of them

    @property
    def words(self) -> str:
        """The kind as a person reads it: 'forbidden import', 'timeout'."""
        return self.value.replace("_", " ")
