"""The NetworkPolicies of evaluation pods, which run untrusted candidate code.

- `kubevolve-evaluation-isolation`: the evaluation pods of Jobs (labelled `kubevolve.io/network: none`)
  reach nothing and are reached by nothing. They need no network: the operator hands them the candidate
  (a ConfigMap) and reads their result from the pod (termination message and log). The containers of a pod
  share one network namespace, so this is what keeps the candidate's container off the network; the
  candidate's seccomp filter (no internet socket) is a second layer.
- `kubevolve-evaluation-egress`: evaluation pods without the network label may reach DNS and the store,
  nothing else; no ingress. kubevolve makes no such pod any more (a TrainJob's pods once stored their result
  themselves; they are isolated like a Job's now).
- `<trainjob>-peers`, one per TrainJob, made by the operator with it and owned by it (the garbage collector
  removes it with the TrainJob): the TrainJob's pods (its launcher and node pods, labelled with its name) may
  reach each other on any port (mpirun's ssh on 2222, the ranks' rendezvous and collectives) and DNS (the MPI
  hostfile names the pods by their JobSet DNS names), nothing else. Policies only add allowed traffic, so
  together with the isolation policy, which selects those pods too, this is all they may send or receive; a
  pod the TrainJob starts before its policy exists is isolated until then.

The Helm chart renders the same policies for its namespaces (tests/deploy/test_helm_chart.py checks they
agree); `kubevolve lab create` adds them to new labs.

The store ports are the store's own, from its URL (HTTP and gRPC): a NetworkPolicy matches the port a packet
is sent to at the destination, so an external Weaviate behind `https://...:443` needs 443, not Weaviate's 8080.
"""

from __future__ import annotations

import copy
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import (
    NETWORK_LABEL,
    ROLE_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_LABEL,
)
from kubevolve.store.weaviate.connection import WeaviateSettings

POLICY_NAME = "kubevolve-evaluation-egress"
ISOLATION_POLICY_NAME = "kubevolve-evaluation-isolation"
STORE_PORTS = (8080, 50051)  # the bundled Weaviate's HTTP and gRPC ports (its pods listen on these)
DNS_EGRESS = {  # the cluster DNS (kube-dns / CoreDNS pods carry k8s-app: kube-dns) in any namespace
    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def store_ports(url: str | None) -> tuple[int, ...]:
    """The ports the store's URL reaches (HTTP, then gRPC when it differs); the bundled store's without one.
    Raises StoreError for a URL that is not a Weaviate URL."""
    if not url:
        return STORE_PORTS
    settings = WeaviateSettings.from_url(url)
    return tuple(dict.fromkeys((settings.http_port, settings.grpc_port)))


def _policy(name: str, namespace: str, labels: dict | None, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }


def evaluation_isolation_policy(namespace: str, *, labels: dict | None = None) -> dict[str, Any]:
    """No egress and no ingress at all for the evaluation pods of Jobs."""
    selector = {"matchLabels": {ROLE_LABEL: str(Role.EVALUATE), NETWORK_LABEL: "none"}}
    spec = {"podSelector": selector, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": []}
    return _policy(ISOLATION_POLICY_NAME, namespace, labels, spec)


def evaluation_network_policy(
    namespace: str,
    *,
    store_namespace: str,
    store_cidrs: list[str] | None = None,
    labels: dict | None = None,
    store_url: str | None = None,
) -> dict[str, Any]:
    """Egress only to DNS and the store (the bundled Weaviate in `store_namespace`, or `store_cidrs`, on the
    ports of `store_url`, the bundled store's when None), for the evaluation pods not isolated (without the
    network label: a TrainJob's)."""
    ports = [{"protocol": "TCP", "port": p} for p in store_ports(store_url)]
    store_peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in store_cidrs or []]
    if not store_cidrs:
        store_peers = [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": store_namespace}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "weaviate"}},
            }
        ]
    dns = copy.deepcopy(DNS_EGRESS)
    selector = {
        "matchLabels": {ROLE_LABEL: str(Role.EVALUATE)},
        "matchExpressions": [{"key": NETWORK_LABEL, "operator": "DoesNotExist"}],
    }
    spec = {
        "podSelector": selector,
        "policyTypes": ["Egress", "Ingress"],
        "ingress": [],
        "egress": [dns, {"to": store_peers, "ports": ports}],
    }
    return _policy(POLICY_NAME, namespace, labels, spec)


def trainjob_peer_policy(namespace: str, trainjob: str, uid: str) -> dict[str, Any]:
    """The TrainJob `trainjob`'s pods reach each other and DNS, nothing else; owned by the TrainJob."""
    peers = {"podSelector": {"matchLabels": {TRAINJOB_LABEL: trainjob}}}
    spec = {
        "podSelector": copy.deepcopy(peers["podSelector"]),
        "policyTypes": ["Egress", "Ingress"],
        "ingress": [{"from": [copy.deepcopy(peers)]}],
        "egress": [{"to": [copy.deepcopy(peers)]}, copy.deepcopy(DNS_EGRESS)],
    }
    policy = _policy(f"{trainjob}-peers", namespace, {TRAINJOB_LABEL: trainjob}, spec)
    owner = {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "name": trainjob,
        "uid": uid,
    }
    policy["metadata"]["ownerReferences"] = [owner]
    return policy
