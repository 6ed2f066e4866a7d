"""An evaluation handed over as data, so that the pod that evaluates needs no store, no credentials and no
network: what it is given (`EvaluationInput`) and what it hands back (`EvaluationResult`).

On a cluster the operator reads the candidate from the store and gives the evaluation pod an
`EvaluationInput` (a ConfigMap mounted in the judge's container only). The judge's container evaluates it
and publishes the result twice: in full as the last line of its log (`log_line`), and as a digest of that
line, with a compact copy of the result when it fits, as its termination message (`termination_message`,
which the kubelet keeps in the pod's status; at most 4096 bytes). Only that container writes either. The
operator reads both (`read_result`): the log line if its digest is the one the termination message names,
else the compact copy; then it stores the node.

Everything is parsed strictly: a result that is not exactly this shape, names another node, or holds a
value a node cannot (a NaN score, a metric that is not a number, an unknown failure kind) is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.errors import KubevolveError

RESULT_MARKER = "kubevolve-evaluation-result "  # starts the log line that carries the full result
TERMINATION_LIMIT = 4096  # the kubelet keeps at most this many bytes of a termination message
MAX_RESULT_BYTES = 16 << 20  # a log line longer than this is not read
COMPACT_ERROR_CHARS = 500
RESULT_FIELDS = ("node", "stage", "score", "metrics", "artifacts", "error", "failure", "log_tail", "timings")


class HandoverError(KubevolveError, ValueError):
    """An input or a result that is not well formed; the message names what is wrong."""


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HandoverError(f"{what}: {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r:.80}")
    return value


def _number(value: Any, what: str) -> float:
    try:  # a JSON integer too large for a float overflows rather than being infinite
        number = None if isinstance(value, bool) or not isinstance(value, Real) else float(value)
    except OverflowError:
        number = None
    if number is None or not math.isfinite(number):
        raise HandoverError(f"{what} must be a finite number, got {repr(value)[:80]}")
    return number


def _text_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise HandoverError(f"{what} must map names to text")
    return dict(value)


def _number_map(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise HandoverError(f"{what} must map names to numbers")
    return {k: _number(v, f"{what} {k!r}") for k, v in value.items()}


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # nested past the recursion limit: not a result either
        raise HandoverError(f"{what} is not JSON: {type(err).__name__}: {err}"[:300]) from None
    if not isinstance(data, dict):
        raise HandoverError(f"{what} must be a JSON object")
    return data


@dataclass(frozen=True)
class EvaluationInput:
    """One candidate to evaluate: its run (id and spec, as stored) and the node's id and program."""

    run_id: str
    spec: dict[str, Any]
    node_id: str
    code: str

    def to_json(self) -> str:
        return json.dumps({"run": self.run_id, "spec": self.spec, "node": self.node_id, "code": self.code})

    @classmethod
    def from_json(cls, text: str) -> EvaluationInput:
        data = _object(text, "the evaluation input")
        what = "the evaluation input"
        return cls(
            run_id=_need(data, "run", str, what),
            spec=_need(data, "spec", dict, what),
            node_id=_need(data, "node", str, what),
            code=_need(data, "code", str, what),
        )

    def node(self) -> Node:
        return Node(run_id=self.run_id, code=self.code, id=self.node_id)


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation adds to a node: the fields `Engineer.evaluate` sets, nothing else."""

    node_id: str
    stage: Stage
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    error: str = ""
    failure: FailureKind | None = None
    log_tail: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node) -> EvaluationResult:
        if not node.stage.is_final:
            raise HandoverError(f"node {node.id} is not evaluated yet")
        return cls(
            node_id=node.id,
            stage=node.stage,
            score=node.score,
            metrics=dict(node.metrics),
            artifacts=dict(node.artifacts),
            error=node.error,
            failure=node.failure,
            log_tail=node.log_tail,
            timings=dict(node.timings),
        )

    def apply(self, node: Node) -> Node:
        """The stored node with this evaluation's outcome (its other timings, from the proposal, are kept)."""
        if node.id != self.node_id:
            raise HandoverError(f"the result is for node {self.node_id}, not {node.id}")
        node.stage, node.score, node.failure, node.error = self.stage, self.score, self.failure, self.error
        node.metrics, node.artifacts, node.log_tail = dict(self.metrics), dict(self.artifacts), self.log_tail
        node.timings.update(self.timings)
        return node

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "stage": str(self.stage),
            "score": self.score,
            "metrics": self.metrics,
            "artifacts": self.artifacts,
            "error": self.error,
            "failure": None if self.failure is None else str(self.failure),
            "log_tail": self.log_tail,
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        what = "the evaluation result"
        unknown = set(data) - set(RESULT_FIELDS)
        if unknown:
            raise HandoverError(f"{what} has unknown fields {sorted(unknown)}")
        try:
            stage = Stage(_need(data, "stage", str, what))
        except ValueError:
            raise HandoverError(f"{what}: unknown stage {data['stage']!r:.40}") from None
        if not stage.is_final:
            raise HandoverError(f"{what}: stage {stage} is not the end of an evaluation")
        score = data.get("score")
        failure = data.get("failure")
        try:
            kind = None if failure is None else FailureKind(_need(data, "failure", str, what))
        except ValueError:
            raise HandoverError(f"{what}: unknown failure kind {failure!r:.40}") from None
        result = cls(
            node_id=_need(data, "node", str, what),
            stage=stage,
            score=None if score is None else _number(score, f"{what}: the score"),
            metrics=_number_map(data.get("metrics", {}), f"{what}: metrics"),
            artifacts=_text_map(data.get("artifacts", {}), f"{what}: artifacts"),
            error=_need(data, "error", str, what) if "error" in data else "",
            failure=kind,
            log_tail=_need(data, "log_tail", str, what) if "log_tail" in data else "",
            timings=_number_map(data.get("timings", {}), f"{what}: timings"),
        )
        if stage is Stage.EVALUATED and (result.score is None or result.failure is not None):
            raise HandoverError(f"{what}: an evaluated node has a score and no failure")
        if stage is not Stage.EVALUATED and result.failure is None:
            raise HandoverError(f"{what}: a node that failed ({stage}) has a failure kind")
        return result

    def _json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def log_line(self) -> str:
        """The full result, as the last line the judge's container prints (JSON escapes every newline)."""
        return RESULT_MARKER + self._json()

    def termination_message(self) -> str:
        """The digest of `log_line`, with a copy of the result lacking artifacts and the log tail when that
        fits in the kubelet's 4096 bytes."""
        digest = hashlib.sha256(self.log_line().encode()).hexdigest()
        compact = dict(self.to_dict(), artifacts={}, log_tail="", error=self.error[:COMPACT_ERROR_CHARS])
        message = json.dumps({"node": self.node_id, "sha256": digest, "result": compact}, allow_nan=False)
        if len(message.encode()) <= TERMINATION_LIMIT:
            return message
        return json.dumps({"node": self.node_id, "sha256": digest})


def read_result(node_id: str, termination_message: str, log: str | None) -> tuple[EvaluationResult, bool]:
    """The result the judge's container published for `node_id`, and whether it is complete (from the log)
    or the compact copy (the log was unavailable or did not match). Raises HandoverError when there is none."""
    message = _object(termination_message, "the termination message")
    if message.get("node") != node_id:
        raise HandoverError(f"the termination message is for node {message.get('node')!r:.80}, not {node_id}")
    digest = _need(message, "sha256", str, "the termination message")
    for line in reversed((log or "").splitlines()[-1000:]):
        logged = line.startswith(RESULT_MARKER) and len(line) <= MAX_RESULT_BYTES
        if logged and hashlib.sha256(line.encode()).hexdigest() == digest:
            return _result_for(node_id, _object(line[len(RESULT_MARKER) :], "the logged result")), True
    compact = message.get("result")
    if not isinstance(compact, dict):
        raise HandoverError("the log holds no result matching the termination message, which has no copy")
    return _result_for(node_id, compact), False


def _result_for(node_id: str, data: dict[str, Any]) -> EvaluationResult:
    result = EvaluationResult.from_dict(data)
    if result.node_id != node_id:
        raise HandoverError(f"the result is for node {result.node_id}, not {node_id}")
    return result
