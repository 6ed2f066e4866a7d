"""The SQLite store's tables, indexes and migrations, and the check that refuses a file from a newer kubevolve.

Every table carries a `tenant` column that leads every key and index, so a query filtered by tenant (all of
them are) never touches another tenant's rows. `node_counts` is kept by triggers in the same transaction as
the node write, so per-stage counts cost a few index lookups instead of a scan of the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from kubevolve.store.base import StoreError
from kubevolve.store.legacy_failures import FAILED_STAGES, with_legacy_failure

_SCHEMA_V1: list[Migration] = [
    """CREATE TABLE IF NOT EXISTS runs (
        tenant TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (tenant, id))""",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (tenant, created_at)",
    """CREATE TABLE IF NOT EXISTS nodes (
        tenant TEXT NOT NULL, id TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
        stage TEXT NOT NULL, score REAL, island INTEGER NOT NULL, code_hash TEXT NOT NULL,
        data TEXT NOT NULL, embedding BLOB,
        PRIMARY KEY (tenant, id), UNIQUE (tenant, run_id, seq))""",
    "CREATE INDEX IF NOT EXISTS nodes_best ON nodes (tenant, run_id, stage, score DESC, seq)",
    "CREATE INDEX IF NOT EXISTS nodes_code_hash ON nodes (tenant, run_id, code_hash, seq)",
    "CREATE INDEX IF NOT EXISTS nodes_island ON nodes (tenant, run_id, island, seq)",
    """CREATE TABLE IF NOT EXISTS node_counts (
        tenant TEXT NOT NULL, run_id TEXT NOT NULL, stage TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (tenant, run_id, stage)) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS nodes_count_insert AFTER INSERT ON nodes BEGIN
        INSERT INTO node_counts (tenant, run_id, stage, n) VALUES (new.tenant, new.run_id, new.stage, 1)
        ON CONFLICT (tenant, run_id, stage) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS nodes_count_delete AFTER DELETE ON nodes BEGIN
        UPDATE node_counts SET n = n - 1
        WHERE tenant = old.tenant AND run_id = old.run_id AND stage = old.stage;
    END""",
    """CREATE TRIGGER IF NOT EXISTS nodes_count_update AFTER UPDATE OF tenant, run_id, stage ON nodes
    WHEN old.tenant IS NOT new.tenant OR old.run_id IS NOT new.run_id OR old.stage IS NOT new.stage BEGIN
        UPDATE node_counts SET n = n - 1
        WHERE tenant = old.tenant AND run_id = old.run_id AND stage = old.stage;
        INSERT INTO node_counts (tenant, run_id, stage, n) VALUES (new.tenant, new.run_id, new.stage, 1)
        ON CONFLICT (tenant, run_id, stage) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TABLE IF NOT EXISTS insights (
        tenant TEXT NOT NULL, id TEXT NOT NULL, run_id TEXT NOT NULL, data TEXT NOT NULL, embedding BLOB,
        PRIMARY KEY (tenant, id))""",
    "CREATE INDEX IF NOT EXISTS insights_by_run ON insights (tenant, run_id)",
    """CREATE TABLE IF NOT EXISTS cognition (
        tenant TEXT NOT NULL, id TEXT NOT NULL, collection TEXT NOT NULL, content_key TEXT NOT NULL,
        data TEXT NOT NULL, embedding BLOB,
        PRIMARY KEY (tenant, id), UNIQUE (tenant, collection, content_key))""",
]

MIGRATION_BATCH = 500  # nodes read at a time: a migration never holds a whole run's programs in memory


def _fill_failure_kinds(conn: sqlite3.Connection) -> None:
    """Version 2: nodes carry `failure` (a FailureKind) in their JSON. A failed node written by version 1 gets
    the kind its message names (`legacy_failures`: the only information an old row has), UNKNOWN when the
    message names none; evaluated and proposed nodes read as `failure: None` without any change."""
    marks = ", ".join("?" for _ in FAILED_STAGES)
    after = 0
    while True:
        rows = conn.execute(
            f"SELECT rowid, data FROM nodes WHERE rowid > ? AND stage IN ({marks}) ORDER BY rowid LIMIT ?",
            (after, *FAILED_STAGES, MIGRATION_BATCH),
        ).fetchall()
        if not rows:
            return
        for rowid, data in rows:
            filled = with_legacy_failure(data)
            if filled is not None:
                conn.execute("UPDATE nodes SET data = ? WHERE rowid = ?", (filled, rowid))
        after = rows[-1][0]


Migration = str | Callable[[sqlite3.Connection], None]  # a statement, or a step that needs Python

# version -> what brings a file from the previous version to it. Each runs once, in order, in one transaction.
MIGRATIONS: dict[int, list[Migration]] = {1: _SCHEMA_V1, 2: [_fill_failure_kinds]}

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_GET_VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"


def _stored_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    row = conn.execute(_GET_VERSION).fetchone() if has_meta else None
    return int(row[0]) if row else 0


def _refuse_newer(version: int, current: int, path: Path) -> None:
    if version > current:
        raise StoreError(
            f"{path} has store schema version {version}, but this kubevolve only understands up to "
            f"{current}: upgrade kubevolve (the file is left untouched)"
        )


def apply_schema(conn: sqlite3.Connection, current: int, path: Path) -> None:
    """Create or migrate the schema up to `current` in one transaction; safe to run from several processes."""
    version = _stored_version(conn)
    _refuse_newer(version, current, path)
    if version == current:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_META)
        version = _stored_version(conn)  # another process may have migrated while we waited for the lock
        _refuse_newer(version, current, path)
        for target in range(version + 1, current + 1):
            for step in MIGRATIONS[target]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(current),),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_readable(conn: sqlite3.Connection, current: int, path: Path, tenant: str) -> None:
    """What a read-only open needs, checked without writing: this kubevolve's schema, and the tenant's data."""
    version = _stored_version(conn)
    _refuse_newer(version, current, path)
    if version < current:
        raise StoreError(
            f"{path} has store schema version {version}, older than this kubevolve's {current}: open it once "
            "without read-only (any kubevolve command that writes) to migrate it"
        )
    if not any(
        conn.execute(f"SELECT 1 FROM {table} WHERE tenant = ? LIMIT 1", (tenant,)).fetchone()
        for table in ("runs", "nodes", "insights", "cognition")
    ):
        raise StoreError(f"tenant {tenant!r} has nothing stored in {path} yet")
