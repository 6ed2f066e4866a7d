"""Which egress the NetworkPolicies of a namespace leave a pod, as the NetworkPolicy API defines it (a CNI
plugin that enforces policies follows it): a pod that no policy selects for Egress may send anywhere; once
one does, it may send only what the union of the selecting policies' egress rules allows, so an empty union is
no egress at all. `policyTypes` defaults to Ingress, plus Egress where the policy has egress rules.

Used by tests that read rendered manifests (no CNI plugin here), so that "no egress" is judged over every
policy that applies, not by finding one restrictive policy: policies only ever add allowed traffic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector applied to labels (an empty selector selects every pod)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True


def policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


def _rules(
    direction: str, policies: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    applying = [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy"
        and (p.get("metadata") or {}).get("namespace") == namespace
        and selects((p.get("spec") or {}).get("podSelector") or {}, labels)
        and direction in policy_types(p)
    ]
    if not applying:
        return None
    return [rule for p in applying for rule in (p["spec"].get(direction.lower()) or [])]


def egress_rules(
    policies: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The egress rules that apply to a pod with `labels` in `namespace`: None when no policy isolates it for
    egress (everything allowed), else the rules of every policy that selects it (empty: nothing allowed)."""
    return _rules("Egress", policies, namespace, labels)


def ingress_rules(
    policies: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The same for ingress: None when nothing isolates the pod for ingress (anyone may connect to it)."""
    return _rules("Ingress", policies, namespace, labels)
