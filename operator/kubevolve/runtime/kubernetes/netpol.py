"""The NetworkPolicy of evaluation pods, which run untrusted candidate code.

They may reach DNS and the store (the evaluate step reads the candidate and writes its result there), nothing
else: no internet, no other pod, no API server. No ingress at all. The Helm chart renders the same policy for
its namespaces (tests/deploy/test_helm_chart.py checks the two agree); `kubevolve lab create` adds it to new labs.
"""

from __future__ import annotations

from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import ROLE_LABEL

POLICY_NAME = "kubevolve-evaluation-egress"
STORE_PORTS = (8080, 50051)  # Weaviate HTTP and gRPC


def evaluation_network_policy(
    namespace: str, *, store_namespace: str, store_cidrs: list[str] | None = None, labels: dict | None = None
) -> dict[str, Any]:
    """Egress only to DNS and the store: the bundled Weaviate in `store_namespace`, or `store_cidrs`."""
    ports = [{"protocol": "TCP", "port": p} for p in STORE_PORTS]
    store_peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in store_cidrs or []]
    if not store_cidrs:
        store_peers = [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": store_namespace}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "weaviate"}},
            }
        ]
    dns = {
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "podSelector": {"matchLabels": {ROLE_LABEL: str(Role.EVALUATE)}},
            "policyTypes": ["Egress", "Ingress"],
            "ingress": [],
            "egress": [dns, {"to": store_peers, "ports": ports}],
        },
    }
