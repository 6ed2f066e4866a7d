"""kubevolve/testing/netpol.py, which judges "no egress" over rendered NetworkPolicies: the API's rules, including
the ones that make a restrictive-looking policy irrelevant (another policy adds traffic; a selector misses);
and its `egress_restricted`, by which the pod runner gives a pod no network."""

from __future__ import annotations

import pytest

from kubevolve.runtime.kubernetes.netpol import evaluation_isolation_policy
from kubevolve.testing.label_selector import selects
from kubevolve.testing.netpol import egress_restricted, egress_rules

EVALUATION = {"kubevolve.io/role": "evaluate", "kubevolve.io/network": "none"}  # an evaluation pod's labels
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


def test_the_evaluation_policy_cuts_evaluation_pods_off_and_nothing_else():
    policy = evaluation_isolation_policy("lab-a")
    assert egress_restricted([policy], EVALUATION)
    assert not egress_restricted([policy], {"kubevolve.io/role": "propose"})
    assert egress_restricted([policy], {"kubevolve.io/role": "evaluate"})  # the role alone selects it
    assert not egress_restricted([], EVALUATION)


def test_policy_types_and_selectors():
    def policy(selector, **spec):
        return {"spec": {"podSelector": selector, **spec}}

    deny_all = policy({}, policyTypes=["Egress"])
    assert egress_restricted([deny_all], {"any": "pod"})
    assert not egress_restricted([policy({}, policyTypes=["Ingress"])], {"any": "pod"})
    assert egress_restricted([policy({}, egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}])], {})
    assert not egress_restricted([deny_all, policy({}, policyTypes=["Egress"], egress=[{}])], {})  # allow all
    expressions = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    assert egress_restricted([policy(expressions, policyTypes=["Egress"])], {"tier": "b"})
    assert not egress_restricted([policy(expressions, policyTypes=["Egress"])], {"tier": "c"})
    absent = {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}
    assert egress_restricted([policy(absent, policyTypes=["Egress"])], {})
    with pytest.raises(ValueError, match="operator 'Near'"):
        egress_restricted(
            [policy({"matchExpressions": [{"key": "k", "operator": "Near"}]}, policyTypes=["Egress"])], {}
        )
