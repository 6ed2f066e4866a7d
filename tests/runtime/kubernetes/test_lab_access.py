"""What the docs tell lab members to do (docs/multi-tenancy.md, docs/install.md, docs/kubernetes.md,
docs/observability.md) is allowed by the roles the chart renders and `kubevolve lab create` binds, and nothing
more: each command is sent
as the requests kubectl makes for it, as alice (the lab's admin) or bob (its viewer), to the strict kmock.

(Real kubectl cannot be pointed at kmock: it sends built-in objects as protobuf and wants the OpenAPI document
for `apply`; the verbs, resources and namespaces below are what it sends, which is all RBAC decides on.)"""

from __future__ import annotations

import base64

import aiohttp
import pytest
import yaml

from kubevolve.testing import Api
from tests.kit.cluster import LAB_ADMIN, LAB_VIEWER, RELEASE, values_for
from tests.kit.paths import REPO
from tests.runtime.kubernetes.conftest import NAMESPACE

RUNS = f"/apis/kubevolve.io/v1alpha1/namespaces/{NAMESPACE}/evolutionruns"
CORE = f"/api/v1/namespaces/{NAMESPACE}"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
RUN = yaml.safe_load((REPO / "examples" / "circle_packing.yaml").read_text())
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "llm-key", "namespace": NAMESPACE},
    "data": {"api-key": base64.b64encode(b"sk-lab").decode()},
}

# (documented command, the requests kubectl makes for it)
CREATE_SECRET = (
    "kubectl create secret generic llm-key --from-literal=api-key=...",
    [("POST", f"{CORE}/secrets", SECRET)],
)
APPLY_RUN = (
    "kubectl apply -f examples/circle_packing.yaml",
    [
        ("GET", f"{RUNS}/circle-packing", None),
        ("POST", RUNS, {**RUN, "metadata": {**RUN["metadata"], "namespace": NAMESPACE}}),
    ],
)
WATCH_RUNS = (
    "kubectl get evo -w",
    [("GET", RUNS, None), ("GET", f"{RUNS}?watch=true&timeoutSeconds=1", None)],
)
DESCRIBE_RUN = (
    "kubectl describe evo circle-packing",
    [("GET", f"{RUNS}/circle-packing", None), ("GET", f"{CORE}/events", None)],
)
LIST_JOBS = (
    "kubectl get jobs -l kubevolve.io/run=circle-packing",
    [("GET", f"{JOBS}?labelSelector=kubevolve.io%2Frun%3Dcircle-packing", None)],
)
LOGS = (
    "kubectl logs job/circle-packing-eval-00001",
    [
        ("GET", f"{JOBS}/circle-packing-eval-00001", None),
        ("GET", f"{CORE}/pods", None),
        ("GET", f"{CORE}/pods/p/log", None),
    ],
)
SUSPEND = (
    'kubectl patch evo circle-packing --type merge -p \'{"spec":{"suspend":true}}\'',
    [("PATCH", f"{RUNS}/circle-packing", {"spec": {"suspend": True}})],
)
DELETE_RUN = ("kubectl delete evo circle-packing", [("DELETE", f"{RUNS}/circle-packing", None)])
READ_SECRET = ("kubectl get secret llm-key -o yaml", [("GET", f"{CORE}/secrets/llm-key", None)])
REPLACE_STORE_KEY = (  # docs/multi-tenancy.md: the operator issues a new key before the lab's next Job
    "kubectl delete secret kubevolve-store",
    [("DELETE", f"{CORE}/secrets/kubevolve-store", None)],
)
READ_STORE_KEY = ("kubectl get secret kubevolve-store", [("GET", f"{CORE}/secrets/kubevolve-store", None)])
OPEN_BROWSER = (  # docs/observability.md, through `kubectl proxy` (the request is sent with the user's token)
    "kubectl proxy, then open .../services/<release>-kubevolve-ui:http/proxy/",
    [("GET", f"{CORE}/services/{RELEASE}-kubevolve-ui:http/proxy/", None)],
)


@pytest.fixture
def chart_values(operator_config):
    """The chart with the lab's run browser on (docs/observability.md), which adds its proxy to the roles."""
    return values_for(operator_config, ui={"enabled": True, "labs": [NAMESPACE]})


async def statuses(client: Api, requests: list[tuple[str, str, dict | None]]) -> list[int]:
    out = []
    for method, path, body in requests:
        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        timeout = aiohttp.ClientTimeout(total=5)
        async with client.session.request(
            method, client.url + path, json=body, headers={"Content-Type": ctype}, timeout=timeout
        ) as resp:
            if "watch=true" in path:  # the stream's headers say it was allowed: enough
                out.append(resp.status)
                continue
            await resp.read()
            out.append(resp.status)
    return out


@pytest.fixture
async def bob(kmock, api):
    client = api.as_token(kmock.policy.token_for(LAB_VIEWER))
    yield client
    await client.close()


async def test_a_lab_admin_does_what_the_docs_say(kmock, api):
    for command, requests in (
        CREATE_SECRET,
        APPLY_RUN,
        WATCH_RUNS,
        DESCRIBE_RUN,
        LIST_JOBS,
        LOGS,
        SUSPEND,
        DELETE_RUN,
        OPEN_BROWSER,
        REPLACE_STORE_KEY,
    ):
        codes = await statuses(api, requests)
        assert 403 not in codes, f"{LAB_ADMIN.user} may not: {command}: {kmock.policy.report()}"


async def test_a_lab_admin_writes_the_labs_secrets_but_never_reads_one(kmock, api):
    assert 403 not in await statuses(api, CREATE_SECRET[1])
    assert await statuses(api, READ_SECRET[1]) == [403]
    assert await statuses(api, READ_STORE_KEY[1]) == [403]
    assert [p.request for p in kmock.policy.take_problems()] == [
        "get secrets 'llm-key' in namespace 'lab-a'",
        "get secrets 'kubevolve-store' in namespace 'lab-a'",
    ]


async def test_a_lab_viewer_reads_runs_and_their_jobs_and_changes_nothing(kmock, api, bob):
    await statuses(api, APPLY_RUN[1])
    for command, requests in (WATCH_RUNS, DESCRIBE_RUN, LIST_JOBS, LOGS, OPEN_BROWSER):
        assert 403 not in await statuses(bob, requests), f"{LAB_VIEWER.user} may not: {command}"
    for command, requests in (CREATE_SECRET, READ_SECRET, REPLACE_STORE_KEY, SUSPEND, DELETE_RUN):
        assert 403 in await statuses(bob, requests), f"{LAB_VIEWER.user} may: {command}"
    assert 403 in await statuses(bob, [APPLY_RUN[1][1]])
    denied = kmock.policy.take_problems()
    assert {p.identity for p in denied} == {LAB_VIEWER.user} and len(denied) == 6


async def test_nobody_reaches_another_lab(kmock, api, bob):
    other = [
        (method, path.replace(NAMESPACE, "lab-b"), body)
        for method, path, body in [*WATCH_RUNS[1], *CREATE_SECRET[1], *OPEN_BROWSER[1]]
    ]
    assert set(await statuses(api, other)) == {403}
    assert set(await statuses(bob, other)) == {403}
    kmock.policy.take_problems()


async def test_no_lab_member_reaches_the_store_through_the_api_servers_proxy(kmock, api, bob):
    """The browser's proxy grant names its Service alone: not the store's, here or in the release namespace."""
    proxy = f"services/{RELEASE}-kubevolve-weaviate:http/proxy/v1/objects"
    forward = f"/api/v1/namespaces/kubevolve-system/pods/{RELEASE}-kubevolve-weaviate-0/portforward"
    requests = [
        ("GET", f"{CORE}/{proxy}", None),
        ("GET", f"/api/v1/namespaces/kubevolve-system/{proxy}", None),
        ("POST", forward, None),  # kubectl port-forward (SPDY: create)
        ("GET", forward, None),  # (WebSocket upgrade)
    ]
    for client in (api, bob):
        assert set(await statuses(client, requests)) == {403}
    assert len(kmock.policy.take_problems()) == 8
