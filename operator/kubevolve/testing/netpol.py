"""Which egress the NetworkPolicies of a namespace leave a pod, as the NetworkPolicy API defines it (a CNI
plugin that enforces policies follows it): a pod that no policy selects for Egress may send anywhere; once
one does, it may send only what the union of the selecting policies' egress rules allows, so an empty union is
no egress at all. `policyTypes` defaults to Ingress, plus Egress where the policy has egress rules.

Used by the pod runner (pods/runner.py: a pod whose egress is restricted gets no network) and by tests that
read rendered manifests (no CNI plugin here), so that "no egress" is judged over every policy that applies,
not by finding one restrictive policy: policies only ever add allowed traffic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kmock

from kubevolve.testing.label_selector import selects

NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"


def declare_network_policies(k: Any) -> None:
    """Serve NetworkPolicies from kmock (the pod runner reads them; the operator does not touch them)."""
    k.resources[NETWORK_POLICIES] = kmock.ResourceInfo(
        kind="NetworkPolicy", namespaced=True, verbs={"get", "list", "create"}
    )


def policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


def _applying_rules(
    direction: str, policies: Iterable[Mapping[str, Any]], labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The `direction` rules of the policies (all of the pod's namespace) that select the pod for it; None
    when none does."""
    applying = [
        p
        for p in policies
        if selects((p.get("spec") or {}).get("podSelector") or {}, labels) and direction in policy_types(p)
    ]
    if not applying:
        return None
    return [rule for p in applying for rule in ((p.get("spec") or {}).get(direction.lower()) or [])]


def _in_namespace(policies: Iterable[Mapping[str, Any]], namespace: str) -> list[Mapping[str, Any]]:
    return [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy" and (p.get("metadata") or {}).get("namespace") == namespace
    ]


def egress_rules(
    policies: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The egress rules that apply to a pod with `labels` in `namespace`: None when no policy isolates it for
    egress (everything allowed), else the rules of every policy that selects it (empty: nothing allowed)."""
    return _applying_rules("Egress", _in_namespace(policies, namespace), labels)


def ingress_rules(
    policies: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The same for ingress: None when nothing isolates the pod for ingress (anyone may connect to it)."""
    return _applying_rules("Ingress", _in_namespace(policies, namespace), labels)


def egress_restricted(policies: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> bool:
    """Whether the policies of the pod's namespace (as the API server lists them) restrict its egress: some
    selects it for Egress, and no rule of those allows all traffic (no `to`, no `ports`)."""
    rules = _applying_rules("Egress", policies, labels)
    return rules is not None and not any(not rule.get("to") and not rule.get("ports") for rule in rules)
