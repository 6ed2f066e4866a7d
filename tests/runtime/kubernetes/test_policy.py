"""Cluster policy: a store the pods can share, and Secrets only from the run's own namespace."""

from __future__ import annotations

import pytest

from kubevolve.core.spec import parse_run_spec
from kubevolve.runtime.kubernetes.policy import policy_problem

WEAVIATE = "weaviate://kv-weaviate.kubevolve-system.svc:8080?grpc=50051"


def spec(**fields):
    return parse_run_spec({"task": "tasks/circle_packing", **fields})


def test_a_sqlite_store_is_refused_in_a_cluster_and_fine_outside():
    problem = policy_problem(spec(), "lab-a", "sqlite:///data/kv.db", cluster=True)
    assert problem and problem.startswith("spec.store.url:") and "cannot share" in problem
    assert policy_problem(spec(), "lab-a", "/data/kv.db", cluster=True)
    assert policy_problem(spec(), "lab-a", "sqlite:///data/kv.db", cluster=False) is None
    assert policy_problem(spec(), "lab-a", WEAVIATE, cluster=True) is None


@pytest.mark.parametrize("field", ["llm", "store"])
def test_a_secret_in_another_namespace_is_refused(field):
    ref = {"apiKeySecret": {"name": "key", "namespace": "lab-b"}}
    run = spec(**{field: ref})
    problem = policy_problem(run, "lab-a", WEAVIATE, cluster=True)
    assert problem == (
        f"spec.{field}.apiKeySecret.namespace: Secrets are read only from the run's own namespace "
        "('lab-a'), not 'lab-b'"
    )
    same = spec(**{field: {"apiKeySecret": {"name": "key", "namespace": "lab-a"}}})
    assert policy_problem(same, "lab-a", WEAVIATE, cluster=True) is None
