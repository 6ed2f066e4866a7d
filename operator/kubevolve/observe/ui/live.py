"""Following runs as they grow: what the run browser knows of each run, read from the store incrementally.

A `RunFollower` keeps one run's nodes in memory and, on `refresh`, reads only what changed since: the nodes
committed after the last one it has (`iter_nodes(after_seq=...)`), and again the ones it last saw PROPOSED (on
Kubernetes a node is stored when proposed and updated when evaluated). Refreshes are at most one per
`REFRESH_S` whatever the number of open pages, so the store's load does not grow with the viewers. The nodes
kept are light copies (no transcript, log tail, artifacts or embedding); a node's page reads it afresh.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.observe.report.data import RunData, RunSettings, run_data, run_settings
from kubevolve.store.base import Store

REFRESH_S = 1.0  # at most one store read per run per second, whatever the number of pages open
PENDING_WINDOW = 1000  # PROPOSED nodes further behind the newest are re-read only when opened
MAX_FOLLOWED = 8  # runs kept in memory; the least recently viewed is dropped beyond this

T = TypeVar("T")


def light(node: Node) -> Node:
    """The node without what only its own page shows (those can be large: prompts, logs, vectors)."""
    return dataclasses.replace(node, transcript=[], log_tail="", artifacts={}, embedding=None)


class RunFollower:
    """One run as last read from the store, with a version that grows whenever anything in it changed."""

    def __init__(self, store: Store, run_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.run_id = run_id
        self.clock = clock
        self.record: RunRecord = store.get_run(run_id)  # NotFound for an unknown run
        self.settings: RunSettings = run_settings(self.record)
        self.nodes: dict[str, Node] = {}
        self.changed_in: dict[str, int] = {}  # node id -> the version in which it last changed
        self.best: Node | None = None
        self.version = 0
        self._last_seq = -1
        self._refreshed = -math.inf
        self._lock = threading.Lock()
        self._data: RunData | None = None
        self._data_version = -1
        self._insights: dict[str, Insight] = {}
        self._cognition: dict[str, CognitionEntry] = {}
        self._looked_up: dict[str, float] = {}
        self._memo: dict[str, tuple[int, Any]] = {}  # what was last reloaded for a missing id, and when

    def refresh(self) -> None:
        with self._lock:
            now = self.clock()
            if now - self._refreshed < REFRESH_S:
                return
            self._refreshed = now
            record = self.store.get_run(self.run_id)
            changed = record != self.record
            pending = [
                n.seq
                for n in self.nodes.values()
                if n.stage is Stage.PROPOSED and n.seq > self._last_seq - PENDING_WINDOW
            ]
            after = min(min(pending) - 1, self._last_seq) if pending else self._last_seq
            for node in self.store.iter_nodes(self.run_id, after_seq=after):
                kept = light(node)
                if self.nodes.get(node.id) != kept:
                    self.nodes[node.id] = kept
                    self.changed_in[node.id] = self.version + 1
                    changed = True
                self._last_seq = max(self._last_seq, node.seq)
            if changed:
                self.record = record
                best = self.store.best_node(self.run_id)
                self.best = light(best) if best is not None else None
                self.version += 1

    def changed_since(self, version: int) -> list[Node]:
        """The nodes that are new or changed after `version`, in `seq` order."""
        return sorted((n for n in self.nodes.values() if self.changed_in[n.id] > version), key=_seq)

    def data(self) -> RunData:
        """The run as the report's charts take it, rebuilt once per version."""
        with self._lock:
            if self._data is None or self._data_version != self.version:
                nodes = sorted(self.nodes.values(), key=_seq)
                self._data = run_data(self.record, nodes, self.best, self.settings)
                self._data_version = self.version
            return self._data

    def memo(self, name: str, build: Callable[[], T]) -> T:
        """`build()`, computed once per version (charts and the tree are redrawn only when the run changed)."""
        version = self.version
        hit = self._memo.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = build()
        self._memo[name] = (version, value)
        return value

    def children(self, node_id: str) -> list[Node]:
        return sorted((n for n in self.nodes.values() if node_id in n.parent_ids), key=_seq)

    def insight(self, insight_id: str | None) -> Insight | None:
        if not insight_id:
            return None
        if insight_id not in self._insights and self._may_reload(f"insight:{insight_id}"):
            self._insights = {i.id: i for i in self.store.list_insights(self.run_id)}
        return self._insights.get(insight_id)

    def cognition(self, entry_ids: list[str]) -> dict[str, CognitionEntry]:
        """Those of the entries found in the run's cognition base (its collection is the task's name)."""
        missing = [i for i in entry_ids if i not in self._cognition]
        if missing and self._may_reload(f"cognition:{missing[0]}"):
            self._cognition = {e.id: e for e in self.store.list_cognition(self.record.task)}
        return {i: self._cognition[i] for i in entry_ids if i in self._cognition}

    def _may_reload(self, key: str) -> bool:
        """An id still missing after a reload is not looked up again for REFRESH_S (a page asks often)."""
        now = self.clock()
        if now - self._looked_up.get(key, -math.inf) < REFRESH_S:
            return False
        self._looked_up[key] = now
        return True


def _seq(node: Node) -> int:
    return node.seq


class Followers:
    """The runs being viewed, created on first view, the least recently viewed dropped beyond MAX_FOLLOWED."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._runs: OrderedDict[str, RunFollower] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunFollower:
        with self._lock:
            follower = self._runs.get(run_id)
            if follower is None:
                follower = self._runs[run_id] = RunFollower(self.store, run_id)
                while len(self._runs) > MAX_FOLLOWED:
                    self._runs.popitem(last=False)
            self._runs.move_to_end(run_id)
        follower.refresh()
        return follower
