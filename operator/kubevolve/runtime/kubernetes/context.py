"""The operator's process-wide helpers, kept in kopf's memo: clients, open stores, wake-ups, measurements.

None of this is the state of a run (that lives in the store and on the cluster); it is either a connection,
a hint that a run should be looked at now rather than at its next timer, or a short-lived record of the
Jobs this process created or deleted that the watch stream has not shown yet (as Kubernetes controllers'
"expectations"), so that a reconcile right after another does not repeat its calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.observe import ACTIVE, JobInfo
from kubevolve.store import open_store
from kubevolve.store.base import Store

if TYPE_CHECKING:
    from kubevolve.runtime.kubernetes.telemetry import RunFeed

EXPECTATION_TTL = 30.0  # seconds a created/deleted Job is assumed until the watch stream shows it


class Wakers:
    """One asyncio.Event per run: a Job event or a spec change wakes the run's reconcile loop."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, namespace: str, run: str) -> asyncio.Event:
        return self._events.setdefault((namespace, run), asyncio.Event())

    def wake(self, namespace: str, run: str) -> None:
        event = self._events.get((namespace, run))
        if event is not None:
            event.set()

    def forget(self, namespace: str, run: str) -> None:
        self._events.pop((namespace, run), None)


class Stores:
    """Open stores by (URL, tenant), shared by every run of a namespace that names the same store."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], Store] = {}
        self._lock = threading.Lock()

    def get(self, url: str, tenant: str) -> Store:
        with self._lock:
            store = self._stores.get((url, tenant))
            if store is None:
                store = self._stores[(url, tenant)] = open_store(url, tenant=tenant)
            return store

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()


@dataclass
class Expectations:
    created: dict[str, tuple[JobInfo, float]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)

    def view(self, observed: list[JobInfo], now: float) -> list[JobInfo]:
        """The observed Jobs, plus the ones created and minus the ones deleted that the watch has not shown."""
        names = {j.name for j in observed}
        self.created = {
            n: v for n, v in self.created.items() if n not in names and now - v[1] < EXPECTATION_TTL
        }
        self.deleted = {n: t for n, t in self.deleted.items() if n in names and now - t < EXPECTATION_TTL}
        jobs = [j for j in observed if j.name not in self.deleted]
        return jobs + [info for info, _ in self.created.values()]

    def expect_created(self, info: JobInfo, now: float) -> None:
        self.created[info.name] = (JobInfo(**{**info.__dict__, "state": ACTIVE}), now)

    def expect_deleted(self, name: str, now: float) -> None:
        self.deleted[name] = now
        self.created.pop(name, None)


class ReconcileStats:
    """Durations of recent reconciles (seconds): the whole pass, and the part spent awaiting the API server."""

    def __init__(self, keep: int = 100_000) -> None:
        self.durations: deque[float] = deque(maxlen=keep)
        self.api_waits: deque[float] = deque(maxlen=keep)
        self.count = 0

    def record(self, seconds: float, api_seconds: float = 0.0) -> None:
        self.durations.append(seconds)
        self.api_waits.append(api_seconds)
        self.count += 1


@dataclass
class OperatorContext:
    config: OperatorConfig
    kube: Kube
    stores: Stores = field(default_factory=Stores)
    wakers: Wakers = field(default_factory=Wakers)
    stats: ReconcileStats = field(default_factory=ReconcileStats)
    expectations: dict[tuple[str, str], Expectations] = field(default_factory=dict)
    warned: set[tuple[str, str]] = field(default_factory=set)  # (run uid, message) already posted once
    spec_tokens: dict[tuple[str, str], str] = field(default_factory=dict)  # the last spec seen per run
    phases: dict[tuple[str, str], str] = field(default_factory=dict)  # for the runs-by-phase metric
    # Jobs whose start wait was measured, by (namespace, name) as their metadata gives them
    started_jobs: set[tuple[str | None, str | None]] = field(default_factory=set)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)  # one reconcile per run at once
    feeds: dict[tuple[str, str], RunFeed] = field(default_factory=dict)  # runs' metrics read from the store
    results_seen: set[tuple[str, str]] = field(default_factory=set)  # (namespace, Job) whose pods were read
    seeded: set[str] = field(default_factory=set)  # uids of the runs whose judge-seed Secret exists
    runtimes: set[tuple[str, str]] = field(default_factory=set)  # runs' TrainingRuntimes known to exist
    peer_policies: set[tuple[str, str]] = field(default_factory=set)  # (namespace, TrainJob) with its policy
    lab_keys: set[tuple[str, str]] = field(default_factory=set)  # (namespace, store URL) with a key Secret

    def lock(self, namespace: str, run: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, run), asyncio.Lock())

    def expect(self, namespace: str, run: str) -> Expectations:
        return self.expectations.setdefault((namespace, run), Expectations())

    def close(self) -> None:
        self.stores.close()
        self.kube.close()
