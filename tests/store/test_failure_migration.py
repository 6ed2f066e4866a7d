"""Stores written before nodes carried a FailureKind (schema version 1) open, and their failed nodes get one.

Version 1 stored only the message, so the migration classifies it once (`store/legacy_failures.py`), from the
messages version 1 wrote (tests/kit/version_1.py, verbatim). New nodes carry their kind and are never
classified. Weaviate's migration is tested without a server in test_weaviate_store.py.
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
from tests.kit.version_1 import VERSION_1_MESSAGES, version_1_node


@pytest.mark.parametrize(("stage", "error", "kind"), VERSION_1_MESSAGES)
def test_version_1_messages_are_classified_once(stage: Stage, error: str, kind: FailureKind | None) -> None:
    assert legacy_failure(str(stage), error) is kind


# kinds of failures version 1 could not have had: judged evaluation (a runner and a judge) and the LLM judge
# came after it
AFTER_VERSION_1 = {FailureKind.DISK_QUOTA, FailureKind.PROTOCOL_VIOLATION, FailureKind.LLM_JUDGE_REJECTED}


def test_every_kind_has_a_version_1_message() -> None:
    assert {kind for _, _, kind in VERSION_1_MESSAGES} == {*FailureKind, None} - AFTER_VERSION_1


def test_a_node_that_has_its_kind_is_never_reclassified() -> None:
    written = json.dumps({"stage": "failed_quick", "error": "quick stage: timeout: 3s", "failure": "raised"})
    assert with_legacy_failure(written) is None
    assert json.loads(with_legacy_failure(json.dumps({"stage": "evaluated", "error": ""})) or "") == {
        "stage": "evaluated",
        "error": "",
        "failure": None,
    }


# ---- a SQLite file as version 1 wrote it -----------------------------------------------------------------
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
