"""The default install, end to end on paper: `helm template` of the chart's default values, a lab onboarded
with `kubevolve lab create`, and the documented run (examples/circle_packing.yaml). The store must be
authenticated, and the evaluation Job's candidate container must hold no Secret, no service-account token and
have no egress at all (issue 14).

The chart renders no evaluation Job: the operator builds it. So the Job here is built by the operator's own
code (`jobs.build_job`) with the settings the chart's operator Deployment gives it (its environment, read as
the operator reads its own) and the task as the operator reads it from the image. What would reach the
candidate is judged over everything that applies to its pod: every NetworkPolicy the chart and `lab create`
render (they only ever add allowed traffic), the pod's ServiceAccount as the chart makes it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubevolve.core.kinds import Role
from kubevolve.core.spec import parse_run_spec
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.resources import read_task
from kubevolve.testing.netpol import egress_rules
from tests.kit.cluster import HELM, RELEASE, lab_objects, operator_config_of, render_chart
from tests.kit.paths import REPO

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="bin/helm is missing: run `make tools`")

LAB = "lab-a"
EXAMPLE = yaml.safe_load((REPO / "examples" / "circle_packing.yaml").read_text())
# the documented run, and the same run naming every Secret a lab admin can name: none may reach the candidate
SPECS = {
    "documented": EXAMPLE["spec"],
    "every secret named": {
        **EXAMPLE["spec"],
        "llm": {"apiKeySecret": {"name": "llm-key"}},
        "store": {"apiKeySecret": {"name": "store-key"}},
    },
}


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _evaluation_job(docs: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    config = operator_config_of(docs)
    facts = read_task(REPO / spec["task"])  # the image ships tasks/ at its task root, as this checkout has it
    assert not facts.error, facts.error
    run = RunRef(EXAMPLE["metadata"]["name"], LAB, "0b7e3d6e-0000-4000-8000-000000000001")
    return build_job(run, parse_run_spec(spec), config, facts, JobRequest(Role.EVALUATE, "00001", 1))


def _candidate(pod: dict[str, Any]) -> dict[str, Any]:
    """The container that runs candidate code: `candidate` where the pod has one, else the only container
    (the evaluate step, with the candidate inside its process)."""
    containers = {c["name"]: c for c in pod["containers"]}
    if "candidate" in containers:
        return containers["candidate"]
    (only,) = pod["containers"]
    return only


def _secret_refs(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """Every way the container could read a Secret or a token: env from a Secret, a mounted Secret, a
    projected volume with a Secret or a service-account token."""
    refs = [e["name"] for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
    refs += [f"envFrom {e}" for e in container.get("envFrom") or [] if "secretRef" in e]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            refs.append(f"volume {mount['name']}")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source or "serviceAccountToken" in source:
                refs.append(f"projected volume {mount['name']}")
    return refs


def test_the_default_store_is_authenticated_and_the_operator_points_at_it():
    docs = render_chart()
    (weaviate,) = _by_kind(docs, "StatefulSet")
    env = {e["name"]: e for e in weaviate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"]["value"] == "false"
    assert env["AUTHENTICATION_APIKEY_ENABLED"]["value"] == "true"
    assert env["AUTHORIZATION_RBAC_ENABLED"]["value"] == "true"
    (service,) = [
        s for s in _by_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-kubevolve-weaviate"
    ]
    config = operator_config_of(docs)
    assert config.store_url and service["metadata"]["name"] in config.store_url
    assert config.lab_keys  # each lab gets a key of its own tenant, never the administrator's


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_candidate_container_holds_no_secret_and_no_token(spec):
    docs = render_chart()
    job = _evaluation_job(docs, spec)
    pod = job["spec"]["template"]["spec"]
    assert _secret_refs(_candidate(pod), pod) == []
    # no token: not mounted by the pod, nor by default through its ServiceAccount, which no role binds
    assert pod["automountServiceAccountToken"] is False
    account = pod.get("serviceAccountName")
    made = [
        a
        for a in [*_by_kind(docs, "ServiceAccount"), *_by_kind(lab_objects(LAB), "ServiceAccount")]
        if a["metadata"]["name"] == account and a["metadata"]["namespace"] == LAB
    ]
    assert account and made and all(a["automountServiceAccountToken"] is False for a in made), account
    bindings = [*_by_kind(docs, "RoleBinding"), *_by_kind(docs, "ClusterRoleBinding")]
    bindings += [*_by_kind(lab_objects(LAB), "RoleBinding")]
    bound = [
        b["metadata"]["name"]
        for b in bindings
        for s in b.get("subjects") or []
        if s["kind"] == "ServiceAccount" and s["name"] == account
    ]
    assert bound == []


def test_the_candidate_container_has_no_egress_at_all():
    docs = render_chart()
    job = _evaluation_job(docs, EXAMPLE["spec"])
    labels = job["spec"]["template"]["metadata"]["labels"]
    # circle_packing is judged: the candidate has a container of its own, beside the judge's
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["judge", "candidate"]
    policies = [*_by_kind(docs, "NetworkPolicy"), *_by_kind(lab_objects(LAB), "NetworkPolicy")]
    assert egress_rules(policies, LAB, labels) == []  # isolated for egress, and nothing allowed
