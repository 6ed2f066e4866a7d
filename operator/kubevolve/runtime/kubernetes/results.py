"""What an evaluation pod hands back: the result its judge container published, read by the operator and
stored as the node's outcome (an evaluation pod has no route to the store and no key for it).

An evaluation Job's pods are found by the Job controller's label and their judge is the `judge` container; a
TrainJob's judge is the `node` container of its launcher pods, found by the labels the TrainJob's runtime patch
puts on them (trainjob.launcher_pods): never a node pod's, where the candidate's ranks run.

The judge's container is the only writer of both places the result is read from (loop/evaluation_io.py):
its termination message, which the kubelet copies into the pod's status when the container exits, and its
log. The candidate's container has its own termination message and log, which are never read; a result is
taken only from a judge container that exited 0, only for the node its Job evaluates, and only in the exact
shape a node's evaluation has. A Job whose pod published nothing usable is a failed attempt, retried as any.

Each finished evaluation Job is looked at once per operator process (the API calls: one pod listing and one
log read), and only while its node is still PROPOSED in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubevolve.core.kinds import Role
from kubevolve.core.models import Node
from kubevolve.loop.evaluation_io import MAX_RESULT_BYTES, EvaluationResult, HandoverError, read_result
from kubevolve.runtime.kubernetes.jobs import JUDGE
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.observe import JobInfo
from kubevolve.runtime.kubernetes.trainjob import NODE, launcher_pods
from kubevolve.store.base import Store

log = logging.getLogger("kubevolve.operator")
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods
LOG_LINES = 50  # the result is the judge's last line; a few more in case the interpreter said more at exit
# what one log read may hold: the result line at its longest and room for the lines around it (a legacy
# task's candidate shares the judge's container and its log, and may make those lines long)
LOG_BYTES = MAX_RESULT_BYTES + (1 << 20)
PARTIAL_NOTE = "(the judge's log was not readable: artifacts and the log tail are missing)"


def awaiting_result(jobs: Iterable[JobInfo], nodes: dict[str, Node | None]) -> list[JobInfo]:
    """The finished evaluation Jobs and TrainJobs whose node is still waiting for its result."""
    due = []
    for job in jobs:
        node = nodes.get(job.node_id)
        waiting = node is not None and not node.stage.is_final
        if job.role == Role.EVALUATE and job.done and waiting:
            due.append(job)
    return due


def judge_source(job: JobInfo) -> tuple[dict[str, str], str]:
    """The labels of the pods that hold the evaluation's judge, and the judge's container."""
    if job.kind == "TrainJob":
        return launcher_pods(job.name), NODE
    return {JOB_NAME_LABEL: job.name}, JUDGE


def judge_termination(pod: dict[str, Any], judge: str = JUDGE) -> str | None:
    """The termination message of the pod's judge container, if it exited 0 with one."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != judge:
            continue
        terminated = (status.get("state") or {}).get("terminated") or {}
        message = terminated.get("message")
        if terminated.get("exitCode") == 0 and isinstance(message, str) and message:
            return message
    return None


async def published_result(kube: Kube, namespace: str, job: JobInfo) -> EvaluationResult | None:
    """The result the Job's (TrainJob's launcher) pod published, or None. Raises ApiException when the pods
    cannot be listed."""
    selector, judge = judge_source(job)
    pods = await kube.list_pods(namespace, selector)
    pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
    for pod in pods:
        message = judge_termination(pod, judge)
        if message is None:
            continue
        text = await kube.pod_log(namespace, pod["metadata"]["name"], judge, LOG_LINES, LOG_BYTES)
        try:
            result, complete = read_result(job.node_id, message, text)
        except HandoverError as err:
            log.warning(f"{namespace}/{job.name}: the judge's result is refused: {err}")
            continue
        if not complete:
            result = replace(result, log_tail=PARTIAL_NOTE)
        return result
    return None


def store_result(store: Store, result: EvaluationResult, job: JobInfo | None = None) -> Node | None:
    """Make the node final with `result`; None if it already is (a result is stored once). With the `job`
    that evaluated it, its wall time from the Job's start to its end (`timings["evaluate_job"]`, pod start-up
    included: what the operator's pacer counts a slot busy for, loop/pacing.py)."""
    node = store.get_node(result.node_id)
    if node.stage.is_final:
        return None
    node = result.apply(node)
    node.timings.pop("evaluate_job", None)  # the operator's own measure: never what a pod published
    if job is not None and job.started_at is not None and job.finished_at is not None:
        node.timings["evaluate_job"] = max(0.0, job.finished_at - job.started_at)
    store.update_node(node)
    return node


async def collect_results(
    kube: Kube, store: Store, namespace: str, jobs: list[JobInfo], seen: set[tuple[str, str]]
) -> list[Node]:
    """Store the results of `jobs` (finished evaluation Jobs whose nodes wait, see `awaiting_result`) that
    were not looked at before (`seen`, updated); return the nodes stored."""
    fresh = [j for j in jobs if (namespace, j.name) not in seen]

    async def one(job: JobInfo) -> tuple[EvaluationResult, JobInfo] | None:
        try:
            result = await published_result(kube, namespace, job)
        except ApiException as err:  # looked at again on the next pass
            log.warning(f"{namespace}/{job.name}: cannot read its pods: {err.status} {err.reason}")
            return None
        seen.add((namespace, job.name))
        return None if result is None else (result, job)

    stored = []
    for found in await asyncio.gather(*(one(job) for job in fresh)):
        if found is not None:
            node = await asyncio.to_thread(store_result, store, *found)
            if node is not None:
                stored.append(node)
    return stored
