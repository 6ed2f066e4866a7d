"""kmock with the API server's checks (kubevolve.testing.strict): who may do what is decided per request,
from the chart's RBAC and the bindings stored since; objects are validated before they are stored; every
refusal is recorded, so that a client that only logs a 403 still fails its test."""

from __future__ import annotations

import copy

import pytest

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.testing import (
    JOBS,
    Api,
    ApiError,
    ValidatingEmulator,
    declare_lab_resources,
    declare_resources,
    live_objects,
)
from kubevolve.testing.rbac import Identity
from kubevolve.testing.strict import CONTROL_PLANE_TOKEN, ApiServerPolicy
from tests.kit.cluster import CLUSTER_ADMIN, LAB_ADMIN, OPERATOR, lab_objects, strict_policy

pytestmark = pytest.mark.kmock(cls=ValidatingEmulator)
LAB = "lab-a"


@pytest.fixture
def policy(kmock) -> ApiServerPolicy:
    declare_resources(kmock)
    declare_lab_resources(kmock)
    kmock.policy = strict_policy()
    return kmock.policy


@pytest.fixture
async def as_who(kmock, policy):
    clients: list[Api] = []

    def client(identity: Identity | None) -> Api:
        clients.append(Api(str(kmock.url), policy.token_for(identity) if identity else None))
        return clients[-1]

    yield client
    for c in clients:
        await c.close()


def a_job(name: str = "toy-eval-00001") -> dict:
    body = build_job(
        RunRef("toy", LAB, "uid-1"),
        RunSpec(task="t"),
        OperatorConfig(),
        TaskFacts(name="t"),
        JobRequest(Role.EVALUATE, "00001"),
    )
    body["metadata"]["name"] = name
    return body


async def test_anonymous_and_unknown_tokens_are_refused_and_recorded(kmock, policy, as_who):
    with pytest.raises(ApiError) as err:
        await as_who(None).get("v1/secrets", LAB, "llm-key")
    assert (
        err.value.status == 403
        and 'User "system:anonymous" cannot get resource "secrets"' in err.value.message
    )
    forged = as_who(None).as_token("forged")
    with pytest.raises(ApiError) as err:
        await forged.get("v1/secrets", LAB, "llm-key")
    await forged.close()
    assert err.value.status == 401
    kinds = [(p.kind, p.identity) for p in policy.take_problems()]
    assert kinds == [("denied", "system:anonymous"), ("unauthenticated", "?")]


async def test_the_operator_may_create_jobs_but_not_read_secrets(kmock, policy, as_who):
    operator = as_who(OPERATOR)
    await operator.create(JOBS, a_job())
    assert [j["metadata"]["name"] for j in live_objects(kmock, JOBS, LAB)] == ["toy-eval-00001"]
    with pytest.raises(ApiError) as err:
        await operator.get("v1/secrets", LAB, "llm-key")
    assert err.value.status == 403
    (problem,) = policy.take_problems()
    assert (
        str(problem)
        == "denied: system:serviceaccount:kubevolve-system:kv-kubevolve get secrets 'llm-key' in namespace 'lab-a'"
    )


async def test_an_invalid_object_is_refused_before_it_is_stored(kmock, policy, as_who):
    bad = a_job()
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "8GB"
    with pytest.raises(ApiError) as err:
        await as_who(OPERATOR).create(JOBS, bad)
    assert err.value.status == 422 and "limits.memory: Invalid value: '8GB'" in err.value.message
    assert live_objects(kmock, JOBS, LAB) == []
    (problem,) = policy.take_problems()
    assert problem.kind == "invalid" and problem.identity == OPERATOR.user


async def test_a_patch_is_validated_as_the_object_it_makes(kmock, policy, as_who):
    await as_who(OPERATOR).create(JOBS, a_job())
    control_plane = Api(str(kmock.url), CONTROL_PLANE_TOKEN)
    try:
        await control_plane.patch(JOBS, LAB, "toy-eval-00001", {"status": {"active": 1}}, sub="status")
        with pytest.raises(ApiError) as err:
            await control_plane.patch(JOBS, LAB, "toy-eval-00001", {"status": {"activ": 1}}, sub="status")
    finally:
        await control_plane.close()
    assert err.value.status == 422 and "status.activ: unknown field" in err.value.message
    assert len(policy.take_problems()) == 1


async def test_blocking_an_owners_deletion_takes_update_on_its_finalizers(kmock, policy, as_who):
    """OwnerReferencesPermissionEnforcement: the lab admin may not create Jobs anyway; a role that may create
    Jobs but not update evolutionruns/finalizers is refused a Job that blocks its run's deletion."""
    policy.rbac.add(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "job-maker"},
                "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "job-maker"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "job-maker",
                },
                "subjects": [{"kind": "User", "name": "maker"}],
            },
        ]
    )
    policy.refresh()
    maker = as_who(Identity.person("maker"))
    with pytest.raises(ApiError) as err:
        await maker.create(JOBS, a_job())
    assert err.value.status == 403 and "cannot set blockOwnerDeletion" in err.value.message
    loose = copy.deepcopy(a_job("toy-eval-00002"))
    loose["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = False
    await maker.create(JOBS, loose)
    assert [p.kind for p in policy.take_problems()] == ["denied"]


async def test_role_bindings_created_over_the_api_count_from_then_on(kmock, policy, as_who):
    alice = as_who(LAB_ADMIN)
    runs = "kubevolve.io/v1alpha1/evolutionruns"
    with pytest.raises(ApiError):
        await alice.get(runs, LAB, "toy")  # not onboarded yet
    admin = as_who(CLUSTER_ADMIN)
    for doc in lab_objects(LAB, cluster_queue=None):
        resource = {
            "RoleBinding": "rbac.authorization.k8s.io/v1/rolebindings",
            "ServiceAccount": "v1/serviceaccounts",
            "NetworkPolicy": "networking.k8s.io/v1/networkpolicies",
        }[doc["kind"]]
        await admin.create(resource, doc)
    assert await alice.get(runs, LAB, "toy") is None  # allowed now: a 404, not a 403
    with pytest.raises(ApiError):
        await alice.get(runs, "lab-b", "toy")
    assert [p.kind for p in policy.take_problems()] == ["denied", "denied"]


async def test_the_token_request_api_gives_a_service_accounts_token(kmock, policy, as_who):
    control_plane = Api(str(kmock.url), CONTROL_PLANE_TOKEN)
    try:
        url = f"{kmock.url}/api/v1/namespaces/{LAB}/serviceaccounts/default/token"
        async with control_plane.session.post(url, json={"spec": {}}) as resp:
            token = (await resp.json())["status"]["token"]
        async with control_plane.session.post(url.replace("/default/", "/nobody/"), json={}) as resp:
            assert resp.status == 404
    finally:
        await control_plane.close()
    assert policy.tokens[token] == Identity.service_account(LAB, "default")
    pod = as_who(None).as_token(token)
    with pytest.raises(ApiError) as err:  # a ServiceAccount the chart grants nothing to
        await pod.get("v1/secrets", LAB, "llm-key")
    await pod.close()
    assert err.value.status == 403 and "system:serviceaccount:lab-a:default" in err.value.message
    policy.take_problems()
