"""The NetworkPolicies of evaluation pods, which run untrusted candidate code.

- `kubevolve-evaluation-isolation`: every evaluation pod kubevolve makes (a Job's, and each pod of a
  TrainJob: all labelled `kubevolve.io/role: evaluate`, which alone selects them) reaches nothing and is reached by nothing. They need
  no network: the operator hands them the candidate (a ConfigMap) and reads their result from the pod
  (termination message and log). The containers of a pod share one network namespace, so this is what keeps
  the candidate's container off the network; the candidate's seccomp filter (no internet socket) is a second
  layer.
- `<trainjob>-peers`, one per TrainJob, made by the operator with it and owned by it (the garbage collector
  removes it with the TrainJob): the TrainJob's pods (its launcher and node pods, labelled with its name) may
  reach each other on any port (mpirun's ssh on 2222, the ranks' rendezvous and collectives) and the cluster DNS in kube-system (the MPI
  hostfile names the pods by their JobSet DNS names), nothing else. Policies only add allowed traffic, so
  together with the isolation policy, which selects those pods too, this is all they may send or receive; a
  pod the TrainJob starts before its policy exists is isolated until then.

No policy selects the other pods (proposal and analysis steps, the operator, the store): they reach the store
and the LLM endpoint as the cluster allows. No evaluation pod has a route to the store.

The Helm chart renders the isolation policy for its namespaces (tests/deploy/test_helm_chart.py checks they
agree); `kubevolve lab create` adds it to new labs. tests/deploy/test_network_policies.py checks that every
policy either install makes selects a pod kubevolve makes, and that no candidate's pod is given more.
"""

from __future__ import annotations

import copy
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import (
    ROLE_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_LABEL,
)

ISOLATION_POLICY_NAME = "kubevolve-evaluation-isolation"
DNS_NAMESPACE = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
DNS_EGRESS = {  # the cluster DNS: kube-dns / CoreDNS pods (k8s-app: kube-dns) in kube-system, and only there,
    # as a lab admin may label a pod of their own so and listen on TCP 53
    "to": [{"namespaceSelector": DNS_NAMESPACE, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def _policy(name: str, namespace: str, labels: dict | None, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }


def evaluation_isolation_policy(namespace: str, *, labels: dict | None = None) -> dict[str, Any]:
    """No egress and no ingress at all for evaluation pods (a Job's, and every pod of a TrainJob), selected by
    their role alone: a pod that lacked some other label would still be isolated."""
    selector = {"matchLabels": {ROLE_LABEL: str(Role.EVALUATE)}}
    spec = {"podSelector": selector, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": []}
    return _policy(ISOLATION_POLICY_NAME, namespace, labels, spec)


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
