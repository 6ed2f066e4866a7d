"""The test kit's RBAC authoriser decides as Kubernetes' does: the request attributes of kube-apiserver's
RequestInfoFactory, and the rule semantics the chart's roles rely on (namespaced bindings, subresources,
resourceNames, wildcards, aggregation, ServiceAccount subjects, system:masters)."""

from __future__ import annotations

import pytest

from kubevolve.testing.rbac import (
    ANONYMOUS,
    BOOTSTRAP_POLICY,
    Identity,
    RbacPolicy,
    RequestAttributes,
    request_attributes,
)

RBAC = "rbac.authorization.k8s.io/v1"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/batch/v1/namespaces/lab/jobs", {}, ("list", "batch", "jobs", "", "lab", "")),
        ("GET", "/apis/batch/v1/jobs", {"watch": "true"}, ("watch", "batch", "jobs", "", "", "")),
        ("GET", "/apis/batch/v1/namespaces/lab/jobs/j1", {}, ("get", "batch", "jobs", "", "lab", "j1")),
        ("POST", "/api/v1/namespaces/lab/events", {}, ("create", "", "events", "", "lab", "")),
        ("PUT", "/api/v1/namespaces/lab/secrets/s", {}, ("update", "", "secrets", "", "lab", "s")),
        (
            "PATCH",
            "/apis/kubevolve.io/v1alpha1/namespaces/lab/evolutionruns/r/status",
            {},
            ("patch", "kubevolve.io", "evolutionruns", "status", "lab", "r"),
        ),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/lab/jobs",
            {},
            ("deletecollection", "batch", "jobs", "", "lab", ""),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/namespaces/lab", {}, ("get", "", "namespaces", "", "lab", "lab")),
        (
            "POST",
            "/api/v1/namespaces/lab/serviceaccounts/step/token",
            {},
            ("create", "", "serviceaccounts", "token", "lab", "step"),
        ),
    ],
)
def test_request_attributes_follow_the_api_servers_request_info(method, path, query, expected):
    attrs = request_attributes(method, path, query)
    assert (
        attrs.verb,
        attrs.api_group,
        attrs.resource,
        attrs.subresource,
        attrs.namespace,
        attrs.name,
    ) == expected
    assert attrs.is_resource


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/apis/batch/v1", "/version", "/openapi/v3"])
def test_discovery_is_a_non_resource_request_every_authenticated_user_may_make(path):
    attrs = request_attributes("GET", path, {})
    assert not attrs.is_resource
    policy = RbacPolicy.from_objects(BOOTSTRAP_POLICY)
    assert policy.authorize(Identity.person("alice"), attrs) is not None
    assert policy.authorize(ANONYMOUS, attrs) is None  # system:unauthenticated gets nothing here


def role(kind: str, name: str, rules: list[dict], namespace: str | None = None, **meta) -> dict:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {}), **meta}
    return {"apiVersion": RBAC, "kind": kind, "metadata": metadata, "rules": rules}


def binding(
    kind: str, name: str, role_kind: str, role_name: str, subjects: list[dict], namespace: str | None = None
):
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}
    return {"apiVersion": RBAC, "kind": kind, "metadata": metadata, "roleRef": ref, "subjects": subjects}


ALICE = Identity.person("alice")
ROBOT = Identity.service_account("ops", "robot")


def allowed(
    policy: RbacPolicy,
    who: Identity,
    verb: str,
    resource: str,
    namespace: str = "",
    name: str = "",
    group: str = "",
) -> bool:
    res, _, sub = resource.partition("/")
    return policy.authorize(who, RequestAttributes(verb, group, res, sub, namespace, name)) is not None


def test_a_role_binding_grants_in_its_namespace_only_and_a_cluster_binding_everywhere():
    policy = RbacPolicy.from_objects(
        [
            role(
                "ClusterRole",
                "reader",
                [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            ),
            binding(
                "RoleBinding", "b", "ClusterRole", "reader", [{"kind": "User", "name": "alice"}], "lab-a"
            ),
            binding(
                "ClusterRoleBinding",
                "c",
                "ClusterRole",
                "reader",
                [{"kind": "ServiceAccount", "name": "robot", "namespace": "ops"}],
            ),
        ]
    )
    assert allowed(policy, ALICE, "get", "pods", "lab-a", "p")
    assert not allowed(policy, ALICE, "get", "pods", "lab-b", "p")
    assert not allowed(policy, ALICE, "list", "pods")  # cluster-wide: not through a RoleBinding
    assert not allowed(policy, ALICE, "delete", "pods", "lab-a", "p")
    assert allowed(policy, ROBOT, "list", "pods") and allowed(policy, ROBOT, "get", "pods", "lab-z", "p")
    assert not allowed(policy, Identity.service_account("other", "robot"), "list", "pods")


def test_subresources_are_separate_resources_unless_a_wildcard_names_them():
    policy = RbacPolicy.from_objects(
        [
            role(
                "ClusterRole",
                "r",
                [
                    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]},
                    {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]},
                    {"apiGroups": ["kubevolve.io"], "resources": ["evolutionruns/*"], "verbs": ["get"]},
                ],
            ),
            binding("ClusterRoleBinding", "b", "ClusterRole", "r", [{"kind": "User", "name": "alice"}]),
        ]
    )
    assert allowed(policy, ALICE, "delete", "jobs", "x", "j", group="batch")
    assert not allowed(policy, ALICE, "update", "jobs/status", "x", "j", group="batch")
    assert allowed(policy, ALICE, "patch", "jobs/status", "x", "j", group="batch")  # */status, apiGroups *
    assert allowed(policy, ALICE, "get", "evolutionruns/finalizers", "x", "r", group="kubevolve.io")
    assert not allowed(policy, ALICE, "get", "evolutionruns", "x", "r", group="kubevolve.io")
    assert not allowed(policy, ALICE, "delete", "jobs", "x", "j", group="extensions")


def test_resource_names_restrict_named_requests_and_never_allow_create_or_list():
    rule = {
        "apiGroups": [""],
        "resources": ["services/proxy", "configmaps"],
        "resourceNames": ["ui"],
        "verbs": ["get", "create", "list"],
    }
    policy = RbacPolicy.from_objects(
        [
            role("ClusterRole", "r", [rule]),
            binding("RoleBinding", "b", "ClusterRole", "r", [{"kind": "Group", "name": "lab"}], "x"),
        ]
    )
    member = Identity.person("carol", "lab")
    assert allowed(policy, member, "get", "services/proxy", "x", "ui")
    assert not allowed(policy, member, "get", "services/proxy", "x", "weaviate")
    assert not allowed(policy, member, "create", "configmaps", "x")  # a create has no name yet
    assert not allowed(policy, member, "list", "configmaps", "x")


def test_aggregated_cluster_roles_get_the_rules_their_selectors_pick():
    policy = RbacPolicy.from_objects(
        [
            {
                "apiVersion": RBAC,
                "kind": "ClusterRole",
                "metadata": {"name": "admin"},
                "aggregationRule": {
                    "clusterRoleSelectors": [{"matchLabels": {"aggregate-to-admin": "true"}}]
                },
                "rules": [],
            },
            role(
                "ClusterRole",
                "lab",
                [{"apiGroups": ["kubevolve.io"], "resources": ["evolutionruns"], "verbs": ["create"]}],
                labels={"aggregate-to-admin": "true"},
            ),
            role(
                "ClusterRole",
                "other",
                [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
                labels={"x": "y"},
            ),
            binding("RoleBinding", "b", "ClusterRole", "admin", [{"kind": "User", "name": "alice"}], "x"),
        ]
    )
    grant = policy.authorize(
        ALICE, RequestAttributes("create", "kubevolve.io", "evolutionruns", namespace="x")
    )
    assert grant is not None and grant.role == "ClusterRole/lab"  # the rule's own role is recorded
    assert not allowed(policy, ALICE, "get", "secrets", "x", "s")


def test_system_masters_are_never_asked_and_nobody_else_gets_anything_by_default():
    policy = RbacPolicy.from_objects(BOOTSTRAP_POLICY)
    root = Identity.person("root", "system:masters")
    assert allowed(policy, root, "delete", "namespaces", "", "kube-system")
    assert not allowed(policy, ALICE, "get", "pods", "x", "p")
    assert not allowed(policy, ANONYMOUS, "get", "pods", "x", "p")
