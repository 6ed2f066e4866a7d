"""SQLiteStore: the embedded store, one file that every process on one machine can share.

SQLite needs no setup on a laptop. WAL mode lets the engine, the CLI and a dashboard read while one process
writes. The hot queries (best node, counts per stage, the duplicate check, the next `seq`) are answered from
indexes, so they stay O(log n) at 100k nodes. Vectors are float32 BLOBs ranked by numpy brute force: at this
scale that is exact and simpler than an ANN index.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.store.base import SCHEMA_VERSION, NotFound, StoreError
from kubevolve.store.codec import (
    NODE_COLS,
    cognition_from_row,
    content_key,
    doc_columns,
    insight_from_row,
    node_columns,
    node_from_row,
    run_from_json,
    run_to_json,
    stage_values,
)
from kubevolve.store.sqlite.schema import apply_schema, check_readable
from kubevolve.store.sqlite.vector_cache import VectorCache
from kubevolve.store.vectors import query_vector

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's transaction before giving up
ITER_CHUNK = 500  # nodes per query when streaming a run
MIN_PREFIX = 4  # shortest id prefix get_node resolves
# Checkpoint the WAL every ~16 MB instead of SQLite's 4 MB: each node write touches ~7 pages that later writes
# touch again, so rarer checkpoints copy (and fsync) far fewer pages; add_node is about twice as fast.
WAL_CHECKPOINT_PAGES = 4000

_T = TypeVar("_T")
_P = ParamSpec("_P")


def _translated(
    action: str,
) -> Callable[[Callable[Concatenate[SQLiteStore, _P], _T]], Callable[Concatenate[SQLiteStore, _P], _T]]:
    """Turn sqlite3 errors (locked past the timeout, disk full, not a database) into StoreError; the method
    keeps its signature."""

    def decorate(
        fn: Callable[Concatenate[SQLiteStore, _P], _T],
    ) -> Callable[Concatenate[SQLiteStore, _P], _T]:
        @functools.wraps(fn)
        def wrapper(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(f"{action} failed in {self.path}: {exc}") from exc

        return wrapper

    return decorate


def _placeholders(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string starting with `prefix` (UTF-8 byte order = code point order)."""
    last = ord(prefix[-1])
    return None if last >= 0x10FFFF else prefix[:-1] + chr(last + 1)


class SQLiteStore:
    """The Store protocol over one SQLite file, scoped to one tenant. Usable from several threads at once.

    `read_only=True` opens the file with SQLite's read-only mode: the file, its schema and the tenant must
    exist already (nothing is created or migrated) and every write fails with StoreError. Readers still see
    what a writer commits meanwhile (WAL), which is how `kubevolve ui` follows a run."""

    def __init__(self, path: str | Path, tenant: str = "default", *, read_only: bool = False) -> None:
        if not tenant:
            raise StoreError("a store needs a non-empty tenant name")
        if str(path) in ("", ":memory:"):
            raise StoreError("SQLiteStore needs a file path: each thread opens its own connection to it")
        self.path = Path(path).expanduser()
        self.tenant = tenant
        self.read_only = read_only
        self._local = threading.local()
        self._lock = threading.Lock()
        self._vectors = VectorCache()
        self._conns: list[tuple[int, sqlite3.Connection]] = []
        self._closed = False
        try:
            if read_only:
                if not self.path.is_file():
                    raise StoreError(f"no store at {self.path}: nothing has been stored there yet")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_schema()
        except BaseException:
            self.close()
            raise

    @_translated("opening the store")
    def _open_schema(self) -> None:
        if self.read_only:
            check_readable(self._conn(), SCHEMA_VERSION, self.path, self.tenant)
        else:
            apply_schema(self._conn(), SCHEMA_VERSION, self.path)

    def __repr__(self) -> str:
        ro = ", read_only=True" if self.read_only else ""
        return f"SQLiteStore({str(self.path)!r}, tenant={self.tenant!r}{ro})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # connections and transactions

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (a forked child opens its own)."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != pid:
            target: str | Path = self.path
            uri = False
            if self.read_only:  # SQLite refuses every write on this connection, whatever the caller does
                target, uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro", True
            conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
            )
            with self._lock:
                self._conns.append(
                    (pid, conn)
                )  # registered first, so close() reaches it even if a pragma fails
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.read_only:  # a reader follows the writer's journal mode
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._local.conn, self._local.pid = conn, pid
        return conn

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return self._conn().execute(sql, params).fetchone()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from the start, so a read-then-write is atomic."""
        if self.read_only:
            raise StoreError(f"{self!r} was opened read-only: it cannot write")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            conns = [conn for pid, conn in self._conns if pid == os.getpid()]
            self._conns.clear()
            self._closed = True
        for conn in conns:
            conn.close()

    # runs

    @_translated("put_run")
    def put_run(self, run: RunRecord) -> None:
        data = run_to_json(run)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (tenant, id, created_at, data) VALUES (?, ?, ?, ?) ON CONFLICT (tenant, id)"
                " DO UPDATE SET created_at = excluded.created_at, data = excluded.data",
                (self.tenant, run.id, run.created_at, data),
            )

    @_translated("get_run")
    def get_run(self, run_id: str) -> RunRecord:
        row = self._one("SELECT data FROM runs WHERE tenant = ? AND id = ?", (self.tenant, run_id))
        if row is None:
            raise NotFound(f"no run {run_id!r} in tenant {self.tenant!r}")
        return run_from_json(row[0])

    @_translated("list_runs")
    def list_runs(self) -> list[RunRecord]:
        rows = self._conn().execute(
            "SELECT data FROM runs WHERE tenant = ? ORDER BY created_at DESC, rowid DESC", (self.tenant,)
        )
        return [run_from_json(data) for (data,) in rows]

    # nodes

    @_translated("add_node")
    def add_node(self, node: Node) -> Node:
        columns = node_columns(node)
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM nodes WHERE tenant = ? AND id = ?", (self.tenant, node.id)
            ).fetchone():
                raise StoreError(f"node {node.id} already exists in tenant {self.tenant!r}; not added")
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM nodes WHERE tenant = ? AND run_id = ?",
                (self.tenant, node.run_id),
            ).fetchone()
            conn.execute(
                "INSERT INTO nodes (tenant, id, run_id, seq, stage, score, island, code_hash, data, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.tenant, node.id, node.run_id, seq, *columns),
            )
        node.seq = seq
        return node

    @_translated("update_node")
    def update_node(self, node: Node) -> None:
        columns = node_columns(node)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE nodes SET stage = ?, score = ?, island = ?, code_hash = ?, data = ?, embedding = ?"
                " WHERE tenant = ? AND id = ? AND run_id = ?",
                (*columns, self.tenant, node.id, node.run_id),
            )
            if cur.rowcount == 1:
                return
            other = conn.execute(
                "SELECT run_id FROM nodes WHERE tenant = ? AND id = ?", (self.tenant, node.id)
            ).fetchone()
        if other is not None:
            raise StoreError(f"node {node.id} belongs to run {other[0]!r}, not {node.run_id!r}; not updated")
        raise NotFound(f"no node {node.id} in tenant {self.tenant!r}; nothing updated")

    @_translated("get_node")
    def get_node(self, node_id: str) -> Node:
        row = self._one(f"SELECT {NODE_COLS} FROM nodes WHERE tenant = ? AND id = ?", (self.tenant, node_id))
        if row is not None:
            return node_from_row(row)
        if len(node_id) < MIN_PREFIX:
            raise NotFound(
                f"no node {node_id!r} in tenant {self.tenant!r} (a prefix needs {MIN_PREFIX}+ chars)"
            )
        upper = _prefix_upper_bound(node_id)
        sql = "SELECT id FROM nodes WHERE tenant = ? AND id >= ?" + (" AND id < ?" if upper else "")
        params = (self.tenant, node_id, upper) if upper else (self.tenant, node_id)
        ids = [i for (i,) in self._conn().execute(sql + " ORDER BY id LIMIT 3", params)]
        if not ids:
            raise NotFound(f"no node {node_id!r} in tenant {self.tenant!r}")
        if len(ids) > 1:
            shown = ", ".join(ids[:2]) + (", ..." if len(ids) > 2 else "")
            raise StoreError(
                f"node id prefix {node_id!r} is ambiguous (matches {shown}); give more characters"
            )
        return self.get_node(ids[0])

    @_translated("list_nodes")
    def list_nodes(
        self,
        run_id: str,
        *,
        stages: Sequence[Stage] | None = None,
        island: int | None = None,
        after_seq: int = -1,
        limit: int | None = None,
    ) -> list[Node]:
        sql = f"SELECT {NODE_COLS} FROM nodes WHERE tenant = ? AND run_id = ? AND seq > ?"
        params: list[Any] = [self.tenant, run_id, after_seq]
        if stages is not None:
            values = stage_values(stages)
            sql += f" AND stage IN ({_placeholders(values)})" if values else " AND 0"
            params += values
        if island is not None:
            sql += " AND island = ?"
            params.append(island)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(limit, 0))
        return [node_from_row(row) for row in self._conn().execute(sql, params)]

    def iter_nodes(self, run_id: str, *, after_seq: int = -1) -> Iterator[Node]:
        """Keyset pagination: each chunk is its own short query, so no read snapshot stays open across yields."""
        while True:
            chunk = self.list_nodes(run_id, after_seq=after_seq, limit=ITER_CHUNK)
            yield from chunk
            if len(chunk) < ITER_CHUNK:
                return
            after_seq = chunk[-1].seq

    @_translated("count_nodes")
    def count_nodes(self, run_id: str) -> dict[Stage, int]:
        """Read from `node_counts`, which triggers keep in step with every node write (see schema.py)."""
        rows = self._conn().execute(
            "SELECT stage, SUM(n) FROM node_counts WHERE tenant = ? AND run_id = ? GROUP BY stage",
            (self.tenant, run_id),
        )
        return {Stage(stage): n for stage, n in rows if n > 0}

    @_translated("best_node")
    def best_node(self, run_id: str) -> Node | None:
        row = self._one(
            f"SELECT {NODE_COLS} FROM nodes WHERE tenant = ? AND run_id = ? AND stage = ?"
            " AND score IS NOT NULL ORDER BY score DESC, seq LIMIT 1",
            (self.tenant, run_id, str(Stage.EVALUATED)),
        )
        return None if row is None else node_from_row(row)

    @_translated("find_by_code_hash")
    def find_by_code_hash(self, run_id: str, code_hash: str) -> Node | None:
        row = self._one(
            f"SELECT {NODE_COLS} FROM nodes WHERE tenant = ? AND run_id = ? AND code_hash = ? ORDER BY seq LIMIT 1",
            (self.tenant, run_id, code_hash),
        )
        return None if row is None else node_from_row(row)

    # insights

    @_translated("add_insight")
    def add_insight(self, insight: Insight) -> Insight:
        data, blob = doc_columns(insight, "insight")
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM insights WHERE tenant = ? AND id = ?", (self.tenant, insight.id)
            ).fetchone():
                raise StoreError(f"insight {insight.id} already exists in tenant {self.tenant!r}; not added")
            conn.execute(
                "INSERT INTO insights (tenant, id, run_id, data, embedding) VALUES (?, ?, ?, ?, ?)",
                (self.tenant, insight.id, insight.run_id, data, blob),
            )
        return insight

    @_translated("list_insights")
    def list_insights(self, run_id: str) -> list[Insight]:
        rows = self._conn().execute(
            "SELECT data, embedding FROM insights WHERE tenant = ? AND run_id = ? ORDER BY rowid",
            (self.tenant, run_id),
        )
        return [insight_from_row(row) for row in rows]

    @_translated("search_insights")
    def search_insights(self, run_id: str, vector: Sequence[float], k: int) -> list[tuple[Insight, float]]:
        return self._search("insights", "run_id", run_id, vector, k, -1.0, insight_from_row)

    # cognition

    @_translated("add_cognition")
    def add_cognition(self, entries: Sequence[CognitionEntry]) -> int:
        """All or nothing: one bad entry (say, a reused id with other content) adds none of the batch."""
        prepared = [(e.id, e.collection, content_key(e), *doc_columns(e, "cognition entry")) for e in entries]
        added = 0
        with self._write() as conn:
            for entry_id, collection, key, data, blob in prepared:
                if conn.execute(
                    "SELECT 1 FROM cognition WHERE tenant = ? AND collection = ? AND content_key = ?",
                    (self.tenant, collection, key),
                ).fetchone():
                    continue
                if conn.execute(
                    "SELECT 1 FROM cognition WHERE tenant = ? AND id = ?", (self.tenant, entry_id)
                ).fetchone():
                    raise StoreError(
                        f"cognition entry id {entry_id} is taken by another entry; nothing added"
                    )
                conn.execute(
                    "INSERT INTO cognition (tenant, id, collection, content_key, data, embedding)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (self.tenant, entry_id, collection, key, data, blob),
                )
                added += 1
        return added

    @_translated("list_cognition")
    def list_cognition(self, collection: str) -> list[CognitionEntry]:
        rows = self._conn().execute(
            "SELECT data, embedding FROM cognition WHERE tenant = ? AND collection = ? ORDER BY rowid",
            (self.tenant, collection),
        )
        return [cognition_from_row(row) for row in rows]

    @_translated("search_cognition")
    def search_cognition(
        self, collection: str, vector: Sequence[float], k: int, *, min_score: float = -1.0
    ) -> list[tuple[CognitionEntry, float]]:
        return self._search("cognition", "collection", collection, vector, k, min_score, cognition_from_row)

    def _search(
        self,
        table: str,
        scope_column: str,
        scope: str,
        vector: Sequence[float],
        k: int,
        min_score: float,
        from_row: Callable[[Any], _T],
    ) -> list[tuple[_T, float]]:
        """Rank from the in-memory cache of the table's embeddings, then load the winning rows whole."""
        conn = self._conn()
        ranked = self._vectors.search(
            conn, table, scope_column, self.tenant, scope, query_vector(vector), k, min_score
        )
        if not ranked:
            return []
        rowids = [rowid for rowid, _ in ranked]
        found = conn.execute(
            f"SELECT rowid, data, embedding FROM {table} WHERE rowid IN ({_placeholders(rowids)})", rowids
        )
        rows = {row[0]: row[1:] for row in found}
        return [(from_row(rows[rowid]), sim) for rowid, sim in ranked if rowid in rows]
