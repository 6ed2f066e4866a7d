"""What the operator hands an evaluation pod, so that the pod needs no store and no network: the candidate
(a ConfigMap per evaluation Job or TrainJob, of its name) and the judge's seed (a Secret per run).

Both are mounted in the judge's container only. The ConfigMap is deleted with its Job; both name the
EvolutionRun as their owner, so the garbage collector removes what is left when the run is deleted. The
seed is drawn once, when the Secret is created, and never read back by the operator (it may create Secrets,
not read them): the kubelet puts it into the judge's environment (`KUBEVOLVE_JUDGE_SEED`), where every
evaluation of the run finds the same value and no candidate finds any.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from kubevolve.core.models import Node
from kubevolve.errors import KubevolveError
from kubevolve.loop.evaluation_io import EvaluationInput
from kubevolve.runtime.kubernetes import API_VERSION, KIND, RUN_LABEL
from kubevolve.runtime.kubernetes.names import base_name, run_label

INPUT_KEY = "evaluation.json"  # the ConfigMap's one key: the file the judge's container reads
SEED_KEY = "seed"
MAX_INPUT_BYTES = (1 << 20) - (16 << 10)  # a ConfigMap holds 1 MiB, its metadata included


class InputTooLarge(KubevolveError, ValueError):
    """The candidate does not fit in the ConfigMap an evaluation pod is given."""


def owner(run_name: str, run_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run_name,
        "uid": run_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def seed_secret_name(run: str) -> str:
    return f"{base_name(run)}-judge-seed"


def evaluation_input(
    name: str, namespace: str, run_name: str, run_uid: str, spec: dict[str, Any], node: Node
) -> dict[str, Any]:
    """The ConfigMap `name` (the evaluation Job's or TrainJob's name) holding what `kubevolve step evaluate --input` reads."""
    data = EvaluationInput(run_id=run_name, spec=spec, node_id=node.id, code=node.code).to_json()
    if len(data.encode()) > MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"the program is {len(node.code.encode())} bytes: an evaluation pod is given at most "
            f"{MAX_INPUT_BYTES} bytes of program and run spec (a ConfigMap holds 1 MiB); "
            "lower the task's checks.maxCodeBytes"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RUN_LABEL: run_label(run_name), "app.kubernetes.io/managed-by": "kubevolve-operator"},
            "ownerReferences": [owner(run_name, run_uid)],
        },
        "immutable": True,
        "data": {INPUT_KEY: data},
    }


def judge_seed_secret(namespace: str, run_name: str, run_uid: str) -> dict[str, Any]:
    """A fresh seed for the run's judges; created once (a second create finds it and changes nothing)."""
    seed = str(secrets.randbits(63)).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": seed_secret_name(run_name),
            "namespace": namespace,
            "labels": {RUN_LABEL: run_label(run_name), "app.kubernetes.io/managed-by": "kubevolve-operator"},
            "ownerReferences": [owner(run_name, run_uid)],
        },
        "immutable": True,
        "data": {SEED_KEY: base64.b64encode(seed).decode()},
    }
