"""Against a real Kubernetes cluster, when KUBECONFIG points at one (skipped otherwise).

- Always (with KUBECONFIG): the generated CRD installs; the API server refuses a misspelt field with a
  message naming it (strict field validation) and accepts every example (server-side dry run).
- With KUBEVOLVE_TEST_IMAGE (a kubevolve image the cluster can pull) and KUBEVOLVE_TEST_STORE (a store URL
  that both this machine and the pods reach): the operator, run here, takes a small circle-packing run to
  Succeeded with real pods. Namespace: KUBEVOLVE_TEST_NAMESPACE (default "default").
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import yaml

from tests.kit.paths import REPO

NAMESPACE = os.environ.get("KUBEVOLVE_TEST_NAMESPACE", "default")

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no real cluster: set KUBECONFIG (with rights to install CRDs) to run the real-cluster tests",
)


@pytest.fixture(scope="module")
def cluster():
    import kubernetes

    kubernetes.config.load_kube_config()
    client = kubernetes.client.ApiClient()
    crd = yaml.safe_load((REPO / "crds/evolutionruns.kubevolve.io.yaml").read_text())
    ext = kubernetes.client.ApiextensionsV1Api(client)
    try:
        ext.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as err:
        if err.status != 409:
            raise
        current = ext.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = ext.read_custom_resource_definition(crd["metadata"]["name"]).status
        if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
            break
        time.sleep(1)
    yield kubernetes.client.CustomObjectsApi(client)
    client.close()


def _create(api, body, **kwargs):
    return api.create_namespaced_custom_object(
        "kubevolve.io", "v1alpha1", NAMESPACE, "evolutionruns", body, **kwargs
    )


def test_api_server_refuses_a_misspelt_field_and_accepts_the_examples(cluster):
    import kubernetes

    bad = {
        "apiVersion": "kubevolve.io/v1alpha1",
        "kind": "EvolutionRun",
        "metadata": {"name": f"typo-{uuid.uuid4().hex[:6]}"},
        "spec": {"task": "tasks/circle_packing", "budget": {"maxCandidatez": 3}},
    }
    with pytest.raises(kubernetes.client.ApiException) as err:
        _create(cluster, bad, field_validation="Strict", dry_run="All")
    assert "maxCandidatez" in err.value.body
    for path in sorted((REPO / "examples").glob("*.yaml")):
        _create(cluster, yaml.safe_load(path.read_text()), field_validation="Strict", dry_run="All")


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("KUBEVOLVE_TEST_IMAGE") and os.environ.get("KUBEVOLVE_TEST_STORE")),
    reason="set KUBEVOLVE_TEST_IMAGE and KUBEVOLVE_TEST_STORE to run a real evolution on the cluster",
)
async def test_a_small_run_succeeds_with_real_pods(cluster):
    from kubevolve.runtime.kubernetes.config import OperatorConfig
    from kubevolve.runtime.kubernetes.kube import Kube
    from kubevolve.runtime.kubernetes.main import start_operator

    config = OperatorConfig.from_env(
        image=os.environ["KUBEVOLVE_TEST_IMAGE"],
        store_url=os.environ["KUBEVOLVE_TEST_STORE"],
        local_task_root=str(REPO),
        namespaces=(NAMESPACE,),
    )
    operator = await start_operator(config, Kube.from_environment(), namespaces=[NAMESPACE])
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "kubevolve.io/v1alpha1",
        "kind": "EvolutionRun",
        "metadata": {"name": name},
        "spec": {"task": "tasks/circle_packing", "budget": {"maxCandidates": 3}, "sandbox": "none"},
    }
    _create(cluster, body)
    try:
        deadline = time.monotonic() + 900
        phase = None
        while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
            await asyncio.sleep(5)
            obj = cluster.get_namespaced_custom_object(
                "kubevolve.io", "v1alpha1", NAMESPACE, "evolutionruns", name
            )
            phase = (obj.get("status") or {}).get("phase")
        assert phase == "Succeeded", obj.get("status")
        assert obj["status"]["bestScore"] > 0
    finally:
        cluster.delete_namespaced_custom_object("kubevolve.io", "v1alpha1", NAMESPACE, "evolutionruns", name)
        await asyncio.sleep(5)
        await operator.stop()
