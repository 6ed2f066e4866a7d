"""The cluster the operator tests pretend to run on: the Helm chart installed as release `kv` in
`kubevolve-system` (its RBAC rendered by the real helm), Kueue's and Kubeflow Trainer's CRDs (published YAML kept
in tests/kit/crds/), and the people and components that make requests:

- `OPERATOR`: the chart's ServiceAccount, bound to the operator's ClusterRole;
- `LAB_ADMIN` (alice) and `LAB_VIEWER` (bob): bound in their lab by the RoleBindings `kubevolve lab create`
  prints (`lab_objects`), created in kmock as a cluster admin would apply them;
- the control plane (the kmock kubelet: Job controller, Kueue, kubelet), outside the chart's RBAC;
- step pods: the ServiceAccount the operator names, with the token their pod spec mounts (none).

`strict_policy(values)` is the API server of such a cluster for kmock (`kubevolve.testing.strict`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from kubevolve.cli.lab_cmd import lab_manifests
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.testing.rbac import Identity
from kubevolve.testing.schemas import ObjectValidator
from kubevolve.testing.strict import ApiServerPolicy
from tests.kit.paths import REPO

CHART = REPO / "helm" / "kubevolve"
HELM = REPO / "bin" / "helm"
CRDS = Path(__file__).parent / "crds"
RELEASE, RELEASE_NAMESPACE = "kv", "kubevolve-system"
OPERATOR = Identity.service_account(RELEASE_NAMESPACE, f"{RELEASE}-kubevolve")
LAB_ADMIN = Identity.person("alice")
LAB_VIEWER = Identity.person("bob")
CLUSTER_ADMIN = Identity.person("root", "system:masters")

# a chart installed for several labs: the operator limited to them, each with the run browser, TrainJobs on
MULTI_LAB: dict[str, Any] = {
    "operator": {"watchNamespaces": ["lab-a", "lab-b"], "trainJobs": True},
    "networkPolicy": {"namespaces": ["lab-a", "lab-b"]},
    "ui": {"enabled": True, "labs": ["lab-a", "lab-b"]},
}


def _yaml_documents(text: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


@lru_cache(maxsize=16)
def _render(values_json: str) -> tuple[str, ...]:
    values = json.loads(values_json)
    argv = [str(HELM), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    for key, value in _flatten(values):
        argv += ["--set-json", f"{key}={json.dumps(value)}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"helm template failed: {out.stderr}")
    return tuple(json.dumps(doc) for doc in _yaml_documents(out.stdout))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def render_chart(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects, rendered by bin/helm with these values (cached per values)."""
    return [json.loads(doc) for doc in _render(json.dumps(values or {}, sort_keys=True))]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart's operator Deployment among rendered objects."""
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-kubevolve-operator"
    ]
    return deployment


def operator_config_of(docs: list[dict[str, Any]]) -> OperatorConfig:
    """The settings the chart's operator Deployment gives the operator: its environment, read as the operator
    reads its own (values from Secrets are resolved in the pod, so left out)."""
    (container,) = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    return OperatorConfig.from_env({e["name"]: e["value"] for e in container["env"] if "value" in e})


def operator_lease(values: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The namespace and name of the Lease the chart's operator Deployment elects its leader with."""
    deployment = operator_deployment(render_chart(values))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (name,) = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith("--lease=")]
    return deployment["metadata"]["namespace"], name


def values_for(config: OperatorConfig, **more: Any) -> dict[str, Any]:
    """Chart values that install an operator with this configuration (the settings RBAC depends on)."""
    values: dict[str, Any] = {
        "operator": {"trainJobs": config.trainjobs},
        "steps": {"serviceAccountName": config.step_service_account or ""},
    }
    if config.namespaces:
        values["operator"]["watchNamespaces"] = list(config.namespaces)
    for key, value in more.items():
        values.setdefault(key, {}).update(value)
    return values


@lru_cache(maxsize=1)
def published_crds() -> tuple[str, ...]:
    return tuple(
        json.dumps(doc) for path in sorted(CRDS.glob("*.yaml")) for doc in _yaml_documents(path.read_text())
    )


@lru_cache(maxsize=1)
def validator() -> ObjectValidator:
    """Kubernetes 1.35 schemas, and the CRDs of Kueue and Trainer (built once: the Trainer CRD is large)."""
    return ObjectValidator([json.loads(doc) for doc in published_crds()])


def strict_policy(values: Mapping[str, Any] | None = None) -> ApiServerPolicy:
    """The API server of a cluster with the chart installed with `values`."""
    return ApiServerPolicy.from_objects(render_chart(values), validator())


def lab_objects(lab: str, **options: Any) -> list[dict[str, Any]]:
    """What `kubevolve lab create LAB --admins alice --viewers bob` makes, but the Namespace (kmock serves
    namespaces read-only)."""
    options.setdefault("admins", [LAB_ADMIN.user])
    options.setdefault("viewers", [LAB_VIEWER.user])
    return [d for d in lab_manifests(lab, **options) if d["kind"] != "Namespace"]


def record_rbac_usage(policy: ApiServerPolicy) -> None:
    """With KUBEVOLVE_RBAC_USAGE=FILE, append the rules that allowed this test's requests (JSON lines):
    `python -m tests.kit.rbac_usage FILE` then lists the chart's rules that no test used."""
    path = os.environ.get("KUBEVOLVE_RBAC_USAGE")
    if not path:
        return
    with open(path, "a") as out:
        for (grant, verb, resource), count in policy.used.items():
            line = {
                "role": grant.role,
                "rule": grant.rule,
                "verb": verb,
                "resource": resource,
                "count": count,
            }
            out.write(json.dumps(line) + "\n")
        out.write(json.dumps({"seconds": policy.seconds, "requests": dict(policy.by_identity)}) + "\n")
