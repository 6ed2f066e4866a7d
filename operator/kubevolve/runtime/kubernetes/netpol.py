"""The NetworkPolicy of evaluation pods, which run untrusted candidate code.

They may reach DNS and the store (the evaluate step reads the candidate and writes its result there), nothing
else: no internet, no other pod, no API server. No ingress at all. The Helm chart renders the same policy for
its namespaces (tests/deploy/test_helm_chart.py checks the two agree); `kubevolve lab create` adds it to new labs.

The ports are the store's own, from its URL (HTTP and gRPC): a NetworkPolicy matches the port a packet is sent
to at the destination, so an external Weaviate behind `https://...:443` needs 443, not Weaviate's 8080.
"""

from __future__ import annotations

from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import ROLE_LABEL
from kubevolve.store.weaviate.connection import WeaviateSettings

POLICY_NAME = "kubevolve-evaluation-egress"
STORE_PORTS = (8080, 50051)  # the bundled Weaviate's HTTP and gRPC ports (its pods listen on these)


def store_ports(url: str | None) -> tuple[int, ...]:
    """The ports the store's URL reaches (HTTP, then gRPC when it differs); the bundled store's without one.
    Raises StoreError for a URL that is not a Weaviate URL."""
    if not url:
        return STORE_PORTS
    settings = WeaviateSettings.from_url(url)
    return tuple(dict.fromkeys((settings.http_port, settings.grpc_port)))


def evaluation_network_policy(
    namespace: str,
    *,
    store_namespace: str,
    store_cidrs: list[str] | None = None,
    labels: dict | None = None,
    store_url: str | None = None,
) -> dict[str, Any]:
    """Egress only to DNS and the store: the bundled Weaviate in `store_namespace`, or `store_cidrs`, on the
    ports of `store_url` (the bundled store's when None)."""
    ports = [{"protocol": "TCP", "port": p} for p in store_ports(store_url)]
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
