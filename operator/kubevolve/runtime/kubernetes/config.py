"""The operator's own settings (not per run): default image, store and task root, from the environment.

A run's spec overrides the image and the store. `taskRoot` is a folder inside the image: a relative
`spec.task` (e.g. `tasks/circle_packing`) is resolved against it, in the operator's pod (to read the task's
metric direction and stage resources) and in the step pods (their working directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_IMAGE = "ghcr.io/kubevolve/kubevolve:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    image: str = DEFAULT_IMAGE  # the step Jobs' image (a run's spec.image overrides it)
    gpu_image: str | None = None  # for evaluations that request GPUs (CUDA, DeepSpeed); None: `image`
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()  # registry Secrets of the step pods (in each run's namespace)
    step_service_account: str | None = None  # the step pods' ServiceAccount; None: the namespace's default
    store_url: str | None = None  # the default store; a run's spec.store.url overrides it
    task_root: str = "/opt/kubevolve"  # in the image: the step pods' working directory
    local_task_root: str | None = None  # where the operator reads tasks, if not the same image (a laptop)
    resync_seconds: float = 30.0  # reconcile at least this often while Jobs run (Job events wake it sooner)
    idle_resync_seconds: float = 300.0  # for finished, failed and suspended runs
    trainjobs: bool = False  # watch Kubeflow Trainer TrainJobs (enable where Trainer is installed)
    lab_keys: bool = False  # give each lab its own store key (labkeys.py; a Weaviate with RBAC and DB users)
    run_as_user: int = 65532  # the non-root uid of every step pod
    # an evaluation pod's candidate container runs as a uid of its own, one of 2^24 above this (jobs.py)
    candidate_uid_base: int = 2_100_000_000
    scratch_size: str = "8Gi"  # emptyDir size limit of a pod's scratch folder
    namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: every namespace
    metrics_port: int | None = None  # serve Prometheus metrics here (KUBEVOLVE_METRICS_PORT)
    # leader election (leader.py): with a Lease name, only the replica holding that Lease reconciles
    lease_name: str | None = None
    lease_namespace: str = "default"
    lease_seconds: float = 15.0
    lease_renew_seconds: float = 10.0
    lease_retry_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> OperatorConfig:
        """The settings from KUBEVOLVE_OPERATOR_<FIELD> variables; a value that does not parse is a ValueError
        naming the variable."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = f"KUBEVOLVE_OPERATOR_{f.name.upper()}"
            if env.get(variable) is not None:
                values[f.name] = _parse(variable, env[variable], f.name, str(f.type))
        if "store_url" not in values and env.get("KUBEVOLVE_STORE"):
            values["store_url"] = env["KUBEVOLVE_STORE"]
        if env.get("KUBEVOLVE_METRICS_PORT"):
            values["metrics_port"] = _parse(
                "KUBEVOLVE_METRICS_PORT", env["KUBEVOLVE_METRICS_PORT"], "", "int"
            )
        config = cls(**values)
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})

    def task_path(self, task: str) -> Path:
        """Where the operator reads a run's task: absolute as given, relative against the task root."""
        path = Path(task)
        return path if path.is_absolute() else Path(self.local_task_root or self.task_root) / path


def _parse(variable: str, raw: str, name: str, kind: str) -> object:
    if name in ("namespaces", "image_pull_secrets"):
        return tuple(n.strip() for n in raw.split(",") if n.strip())
    if name == "step_service_account":
        return raw.strip() or None
    if name in ("trainjobs", "lab_keys"):
        if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ValueError(f"{variable}={raw!r}: expected true or false")
        return raw.lower() in ("1", "true", "yes", "on")
    number = {"float": float, "int": int, "int | None": int}.get(kind)
    if number is None:
        return raw
    try:
        return number(raw)
    except ValueError:
        raise ValueError(
            f"{variable}={raw!r}: expected {'a number' if number is float else 'an integer'}"
        ) from None
