"""tests/kit/netpol.py, which judges "no egress" over rendered NetworkPolicies: the API's rules, including
the ones that make a restrictive-looking policy irrelevant (another policy adds traffic; a selector misses)."""

from __future__ import annotations

import pytest

from tests.kit.netpol import egress_rules, selects

DNS = {"ports": [{"protocol": "UDP", "port": 53}]}


def policy(name, selector, *, namespace="lab", egress=None, types=None):
    spec = {"podSelector": selector}
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "n", "operator": "DoesNotExist"}]}, {"n": "none"}, False),
        ({"matchExpressions": [{"key": "n", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "n", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "n", "operator": "In", "values": ["x"]}]}, {"n": "x"}, True),
        ({"matchExpressions": [{"key": "n", "operator": "NotIn", "values": ["x"]}]}, {}, True),
        ({"matchExpressions": [{"key": "n", "operator": "NotIn", "values": ["x"]}]}, {"n": "x"}, False),
    ],
)
def test_selectors(selector, labels, expected):
    assert selects(selector, labels) is expected


def test_a_pod_no_policy_isolates_may_send_anywhere():
    ingress_only = policy("in", {}, types=["Ingress"])
    other_namespace = policy("deny", {}, namespace="elsewhere", egress=[], types=["Egress"])
    assert egress_rules([ingress_only, other_namespace], "lab", {"role": "evaluate"}) is None
    # an empty egress list without policyTypes is an Ingress-only policy (the API's default)
    assert egress_rules([policy("bare", {}, egress=[])], "lab", {}) is None


def test_policies_add_up_so_one_deny_all_does_not_isolate_a_pod_another_opens():
    deny = policy("deny", {"matchLabels": {"role": "evaluate"}}, egress=[], types=["Egress"])
    assert egress_rules([deny], "lab", {"role": "evaluate"}) == []
    opens = policy("dns", {}, egress=[DNS])  # Egress implied by its rules
    assert egress_rules([deny, opens], "lab", {"role": "evaluate"}) == [DNS]
