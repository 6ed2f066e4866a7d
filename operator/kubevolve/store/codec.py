"""How each model becomes a SQLite row and back.

Indexed fields live in their own columns; everything else is the model's JSON, so adding a field to a model
needs no migration. Embeddings are float32 BLOBs beside the JSON, never inside it. Values that cannot be
stored (non-JSON data, NaN embeddings) raise StoreError before any transaction starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from kubevolve.core.models import CognitionEntry, Insight, Node, RunOwner, RunPhase, RunRecord, Stage
from kubevolve.store.base import StoreError
from kubevolve.store.vectors import decode_vector, encode_vector

NODE_COLS = "seq, data, embedding"  # what node_from_row reads
NodeRow = tuple[int, str, bytes | None]
DocRow = tuple[str, bytes | None]  # (data, embedding) of an insight or a cognition entry


def to_json(data: Any, what: str) -> str:
    try:
        return json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored: it is not JSON-serialisable ({exc})") from exc


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys a newer kubevolve may have written that this one's dataclass lacks."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def run_to_json(run: RunRecord) -> str:
    return to_json(dataclasses.asdict(run), f"run {run.id}")


def run_from_json(data: str) -> RunRecord:
    fields = _known_fields(RunRecord, json.loads(data))
    fields["phase"] = RunPhase(fields.get("phase", RunPhase.PENDING))
    fields["owner"] = _owner(fields.get("owner"))
    return RunRecord(**fields)


def _owner(data: Any) -> RunOwner | None:
    """The run's owner as stored; None for records written before owners existed or by the operator, and for
    one this kubevolve cannot read (the owner only ever informs a reader, it never decides anything)."""
    if not isinstance(data, dict):
        return None
    try:
        owner = RunOwner(**_known_fields(RunOwner, data))
    except TypeError:
        return None
    number = (int, float)
    well_typed = (
        isinstance(owner.host, str)
        and isinstance(owner.pid, int)
        and isinstance(owner.heartbeat_at, number)
        and (owner.process_started_at is None or isinstance(owner.process_started_at, number))
    )
    return owner if well_typed else None


def stage_value(stage: Stage | str) -> str:
    try:
        return str(Stage(stage))
    except ValueError as exc:
        raise StoreError(f"unknown stage {stage!r}; expected one of {[str(s) for s in Stage]}") from exc


def stage_values(stages: Any) -> list[str]:
    return [stage_value(s) for s in stages]


def node_columns(node: Node) -> tuple[str, float | None, int, str, str, bytes | None]:
    """(stage, score, island, code_hash, data, embedding): everything stored about a node except its seq."""
    data = node.to_dict()
    data.pop("seq")
    return (
        stage_value(node.stage),
        node.score,
        node.island,
        node.code_hash,
        to_json(data, f"node {node.id}"),
        encode_vector(node.embedding, f"node {node.id}"),
    )


def node_from_row(row: NodeRow) -> Node:
    seq, data, blob = row
    fields = json.loads(data)
    fields["seq"] = seq
    node = Node.from_dict(fields)
    node.embedding = decode_vector(blob)
    return node


def doc_columns(obj: Insight | CognitionEntry, what: str) -> tuple[str, bytes | None]:
    data = dataclasses.asdict(obj)
    data.pop("embedding", None)
    return to_json(data, f"{what} {obj.id}"), encode_vector(obj.embedding, f"{what} {obj.id}")


def insight_from_row(row: DocRow) -> Insight:
    insight = Insight(**_known_fields(Insight, json.loads(row[0])))
    insight.embedding = decode_vector(row[1])
    return insight


def cognition_from_row(row: DocRow) -> CognitionEntry:
    entry = CognitionEntry(**_known_fields(CognitionEntry, json.loads(row[0])))
    entry.embedding = decode_vector(row[1])
    return entry


def content_key(entry: CognitionEntry) -> str:
    """What makes two cognition entries duplicates: the same collection, title and text."""
    return hashlib.sha256(json.dumps([entry.collection, entry.title, entry.text]).encode()).hexdigest()
