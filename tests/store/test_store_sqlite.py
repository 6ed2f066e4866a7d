"""What only the SQLite store promises: the URLs open_store accepts, WAL, migrations from older files, and
that the hot queries are index lookups (checked by query plan here, and by timing at 100k nodes when slow)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from kubevolve.core.models import Node, Stage
from kubevolve.store import (
    SCHEMA_VERSION,
    SQLiteStore,
    StoreError,
    default_store_path,
    default_store_url,
    open_store,
)


def test_open_store_accepts_sqlite_urls_and_plain_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {
        f"sqlite:///{tmp_path}/abs/a.db": tmp_path / "abs" / "a.db",
        "sqlite:rel/b.db": tmp_path / "rel" / "b.db",
        str(tmp_path / "deep" / "er" / "c.db"): tmp_path / "deep" / "er" / "c.db",
        "d.db": tmp_path / "d.db",
    }
    for url, path in cases.items():
        store = open_store(url, tenant="t1")
        assert isinstance(store, SQLiteStore) and store.tenant == "t1"
        store.close()
        assert path.is_file(), url


@pytest.mark.parametrize("url", ["postgres://db/x", "redis:whatever", "", "sqlite://"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert url in str(err.value) or "empty" in str(err.value)


def test_default_store_follows_kubevolve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kubevolve.store as store_module

    monkeypatch.setenv("KUBEVOLVE_HOME", str(tmp_path / "home"))
    assert default_store_path() == store_module.DEFAULT_STORE_PATH == tmp_path / "home" / "kubevolve.db"
    open_store(default_store_url()).close()
    assert default_store_path().is_file()


def test_wal_and_busy_timeout_are_set(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_files_without_or_with_an_older_schema_are_migrated(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()  # an empty SQLite file: no meta table at all
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    conn.close()
    for path in (tmp_path / "empty.db", older):
        store = SQLiteStore(path)
        assert store.add_node(Node(run_id="r", code="x = 1")).seq == 0
        store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
        conn.close()


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        SQLiteStore(tmp_path / "junk.db")


def test_read_only_opens_change_no_file_and_refuse_writes_below_kubevolve(tmp_path: Path) -> None:
    """`read_only` is SQLite's own read-only mode, not only a check in kubevolve: even SQL on the reader's
    connection cannot write, and a missing, unmigrated or newer file is refused without being touched."""
    missing = tmp_path / "none" / "s.db"
    with pytest.raises(StoreError, match="no store at"):
        open_store(str(missing), read_only=True)
    assert not missing.parent.exists()
    path = tmp_path / "s.db"
    writer = SQLiteStore(path, tenant="lab")
    node = writer.add_node(Node(run_id="r", code="x = 1"))
    writer.close()  # the last close checkpoints the WAL into the file
    before = path.read_bytes()
    reader = open_store(f"sqlite://{path}", tenant="lab", read_only=True)
    assert reader.get_node(node.id) == node and list(reader.iter_nodes("r")) == [node]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._conn().execute("DELETE FROM nodes")
    reader.close()
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreError, match="older than this kubevolve"):
        SQLiteStore(path, tenant="lab", read_only=True)


def test_hot_queries_are_index_lookups(tmp_path: Path) -> None:
    """Trace the SQL the hot calls really run, and check each plan uses an index, never a scan or a sort."""
    store = SQLiteStore(tmp_path / "s.db")
    node = store.add_node(Node(run_id="r", code="x = 1", stage=Stage.EVALUATED, score=1.0))
    traced: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(traced.append)
    store.add_node(Node(run_id="r", code="x = 2"))
    store.best_node("r")
    store.count_nodes("r")
    store.find_by_code_hash("r", node.code_hash)
    store.get_node(node.id[:6])
    conn.set_trace_callback(None)
    selects = [sql for sql in traced if sql.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= 7, traced
    for sql in selects:
        plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, f"{sql}\n  -> {plan}"
    store.close()


@pytest.mark.slow
def test_hot_queries_stay_fast_at_100k_nodes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "big.db")
    stages = list(Stage)
    for i in range(100_000):
        stage = stages[i % len(stages)]
        score = (i % 997) / 997 if stage is Stage.EVALUATED else None
        store.add_node(Node(run_id="big", code=f"x = {i}", stage=stage, score=score, island=i % 4))

    def per_call_ms(fn, reps: int = 200) -> float:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps * 1000

    timings = {
        "add_node": per_call_ms(lambda: store.add_node(Node(run_id="big", code="y = 1"))),
        "best_node": per_call_ms(lambda: store.best_node("big")),
        "count_nodes": per_call_ms(lambda: store.count_nodes("big")),
        "find_by_code_hash": per_call_ms(lambda: store.find_by_code_hash("big", "0" * 32)),
    }
    store.close()
    assert all(ms < 3.0 for ms in timings.values()), timings


def test_insight_search_ranks_from_its_cache_as_the_brute_force_does(tmp_path):
    """The in-memory cache (rows read once, then only new ones) ranks exactly as `vectors.rank` over every row:
    ties by earliest row, zero vectors at 0, k beyond the row count; rows another handle adds are found."""
    import numpy as np

    from kubevolve.core.models import Insight
    from kubevolve.store.vectors import query_vector, rank

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    vectors[7] = vectors[3]  # a tie
    vectors[11] = 0.0  # similar to nothing
    store, other = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    for i, v in enumerate(vectors[:30]):
        store.add_insight(Insight(run_id="r", text=f"i{i}", node_ids=[], embedding=v.tolist()))
    for query in (vectors[3], rng.standard_normal(8), -vectors[5]):
        for k in (1, 4, 30, 50):
            expected = rank(query_vector(query.tolist()), [v.tobytes() for v in vectors[:30]], k)
            got = store.search_insights("r", query.tolist(), k)
            assert [ins.text for ins, _ in got] == [f"i{i}" for i, _ in expected]
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)
    for i, v in enumerate(vectors[30:], start=30):  # written by another handle (another process alike)
        other.add_insight(Insight(run_id="r", text=f"i{i}", node_ids=[], embedding=v.tolist()))
    best = store.search_insights("r", vectors[35].tolist(), 1)
    assert best[0][0].text == "i35" and best[0][1] == pytest.approx(1.0)
    assert store.search_insights("other-run", vectors[35].tolist(), 3) == []
