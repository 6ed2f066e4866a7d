"""Every NetworkPolicy kubevolve installs selects a pod kubevolve makes, and none gives candidate code a way out
(issue 14).

The policies: those of the chart (`helm template`), of a lab (`kubevolve lab create`) and the peer policy the
operator makes with each TrainJob. The pods: those kubevolve makes for every role, built by its own code with
the settings the chart's operator Deployment gives it (proposal and analysis Jobs, the evaluation Job of a
judged task and of a legacy one, a TrainJob's launcher and node pods as Trainer v2.3.0 makes them, in each
namespace runs may use), and the chart's own workloads (the operator, Weaviate, the run browser). Judged with
kubevolve/testing/netpol.py, the NetworkPolicy API's rules: policies only ever add allowed traffic.

- A policy that selects none of these pods is dead configuration: it protects nothing kubevolve makes, and still
  grants what it allows to any pod that comes to match it (as the removed `kubevolve-evaluation-egress` did:
  DNS and the store for evaluation pods without the network label, which kubevolve no longer makes).
- A pod that runs candidate code (every evaluation pod, every pod of a TrainJob) is selected by the isolation
  policy, and what applies to it allows no egress but DNS and its own TrainJob's pods, and no ingress but from
  those pods.
- The other pods keep their egress: the steps, the operator and the run browser reach the store and the LLM
  endpoint, whose addresses no policy of kubevolve's knows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import pytest

from kubevolve.core.kinds import Role
from kubevolve.core.spec import parse_run_spec
from kubevolve.runtime.kubernetes import TRAINJOB_LABEL
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.netpol import DNS_EGRESS, ISOLATION_POLICY_NAME, trainjob_peer_policy
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.trainjob import build_runtime, build_trainjob
from kubevolve.testing.label_selector import selects
from kubevolve.testing.netpol import egress_rules, ingress_rules
from kubevolve.testing.trainer import jobset_pods
from tests.kit.cluster import HELM, RELEASE_NAMESPACE, lab_objects, operator_config_of, render_chart

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="bin/helm is missing: run `make tools`")

LAB = "lab-a"  # onboarded with `kubevolve lab create`
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
INSTALLS = {
    "default": {},
    # TrainJobs on, the run browser for two labs, the policy in a namespace of the values' own
    "more": {
        "operator": {"trainJobs": True},
        "networkPolicy": {"namespaces": ["lab-b"]},
        "ui": {"enabled": True, "labs": [LAB, "lab-b"]},
    },
}
JUDGED = TaskFacts(name="circle_packing", metric="sum_radii", cpu=2, memory_mb=4096, judged=True)
LEGACY = TaskFacts(name="legacy", metric="score", cpu=2, memory_mb=4096, judged=False)
MULTI_NODE = TaskFacts(name="linear_attention", metric="acc", cpu=8, memory_mb=65536, gpus=2, judged=True)
STEPS = {"task": "tasks/circle_packing", "llm": {"apiKeySecret": {"name": "llm-key"}}}
TRAINJOB_STEPS = {**STEPS, "jobs": {"evaluate": {"gpus": 2, "trainJob": {"numNodes": 3}}}}


@dataclass(frozen=True)
class Pod:
    what: str
    namespace: str
    labels: dict[str, str]
    candidate: bool  # runs candidate code
    trainjob: str | None = None  # the TrainJob it belongs to


def step_pods(namespace: str, config: OperatorConfig) -> list[Pod]:
    """The pods of a run's Jobs and of a TrainJob evaluation in `namespace`, as the operator builds them."""
    run = RunRef("packing", namespace, "0b7e3d6e-0000-4000-8000-000000000001")
    steps = parse_run_spec(STEPS)

    def job(what: str, role: Role, facts: TaskFacts) -> Pod:
        built = build_job(run, steps, config, facts, JobRequest(role, "00001", 1))
        return Pod(what, namespace, built["spec"]["template"]["metadata"]["labels"], role == Role.EVALUATE)

    pods = [
        job("proposal", Role.PROPOSE, JUDGED),
        job("evaluation (judged)", Role.EVALUATE, JUDGED),
        job("evaluation (legacy)", Role.EVALUATE, LEGACY),
        job("analysis", Role.ANALYZE, JUDGED),
    ]
    spec, trainjobs = parse_run_spec(TRAINJOB_STEPS), replace(config, trainjobs=True)
    trainjob = build_trainjob(run, spec, trainjobs, MULTI_NODE, JobRequest(Role.EVALUATE, "00002", 1))
    name = trainjob["metadata"]["name"]
    made = jobset_pods(trainjob, build_runtime(run, spec, trainjobs, MULTI_NODE))
    assert set(made.pods) == {"launcher", "node"}
    for job_name, (_count, template) in made.pods.items():
        pods.append(Pod(f"TrainJob {job_name}", namespace, template["metadata"]["labels"], True, name))
    return pods


def chart_pods(docs: list[dict[str, Any]]) -> list[Pod]:
    """The pods of the chart's own workloads (the operator, Weaviate, the run browser)."""
    return [
        Pod(f"{d['kind']} {d['metadata']['name']}", d["metadata"]["namespace"], labels, False)
        for d in docs
        if d["kind"] in WORKLOADS
        for labels in [d["spec"]["template"]["metadata"].get("labels") or {}]
    ]


def installed(values: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Pod]]:
    """The NetworkPolicies and the pods of the chart installed with `values`, a lab onboarded with `kubevolve
    lab create`, and a run with a TrainJob evaluation in each namespace runs may use."""
    docs = render_chart(values)
    config = operator_config_of(docs)
    assert not config.namespaces  # the operator watches every namespace: the chart's own too
    labs = dict.fromkeys([RELEASE_NAMESPACE, LAB, *(values.get("networkPolicy") or {}).get("namespaces", [])])
    pods = chart_pods(docs) + [pod for lab in labs for pod in step_pods(lab, config)]
    policies = [d for d in [*docs, *lab_objects(LAB)] if d["kind"] == "NetworkPolicy"]
    for trainjob in dict.fromkeys((p.namespace, p.trainjob) for p in pods if p.trainjob):
        policies.append(trainjob_peer_policy(*trainjob, "tj-uid"))  # what the operator makes with it
    return policies, pods


def dead(policies: list[dict[str, Any]], pods: list[Pod]) -> list[str]:
    """The policies that select none of the pods (in their namespace)."""
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in policies
        if not any(
            pod.namespace == p["metadata"]["namespace"] and selects(p["spec"]["podSelector"], pod.labels)
            for pod in pods
        )
    ]


def _to_its_peers(rule: dict[str, Any], trainjob: str | None, side: str = "to") -> bool:
    """Whether the rule reaches (`side` "from": admits) only pods of `trainjob`, in the pod's own namespace
    (any port)."""
    peers = rule.get(side) or []  # none: every destination (source)
    return bool(trainjob and peers) and all(
        set(peer) == {"podSelector"}
        and (peer["podSelector"].get("matchLabels") or {}).get(TRAINJOB_LABEL) == trainjob
        for peer in peers
    )


def escapes(policies: list[dict[str, Any]], pod: Pod) -> list[str]:
    """How a pod that runs candidate code is not confined: not selected by the isolation policy, or allowed
    egress (by any policy that selects it) beyond DNS and its TrainJob's pods, or ingress from anything but
    its TrainJob's pods."""
    problems = []
    isolating = [
        p
        for p in policies
        if p["metadata"]["name"] == ISOLATION_POLICY_NAME
        and p["metadata"]["namespace"] == pod.namespace
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not isolating:
        problems.append(f"{pod.what} in {pod.namespace}: not selected by {ISOLATION_POLICY_NAME}")
    rules = egress_rules(policies, pod.namespace, pod.labels)
    if rules is None:
        problems.append(f"{pod.what} in {pod.namespace}: no policy restricts its egress")
    for rule in rules or []:
        if rule != DNS_EGRESS and not _to_its_peers(rule, pod.trainjob):
            problems.append(f"{pod.what} in {pod.namespace}: may send {rule}")
    admitted = ingress_rules(policies, pod.namespace, pod.labels)
    if admitted is None:
        problems.append(f"{pod.what} in {pod.namespace}: no policy restricts its ingress")
    for rule in admitted or []:  # a connection in is a channel out as well
        if not _to_its_peers(rule, pod.trainjob, "from"):
            problems.append(f"{pod.what} in {pod.namespace}: may be reached by {rule}")
    return problems


@pytest.mark.parametrize("values", INSTALLS.values(), ids=INSTALLS.keys())
def test_every_policy_selects_a_pod_kubevolve_makes(values):
    policies, pods = installed(values)
    assert {p["metadata"]["name"] for p in policies} >= {ISOLATION_POLICY_NAME}
    assert dead(policies, pods) == []


@pytest.mark.parametrize("values", INSTALLS.values(), ids=INSTALLS.keys())
def test_every_pod_with_candidate_code_is_isolated_and_given_no_more_than_dns_and_its_peers(values):
    policies, pods = installed(values)
    candidates = [p for p in pods if p.candidate]
    # two evaluation Jobs and a TrainJob's two pods in each namespace runs may use
    assert len(candidates) == 4 * len({p.namespace for p in candidates}) >= 8
    assert [problem for pod in candidates for problem in escapes(policies, pod)] == []


@pytest.mark.parametrize("values", INSTALLS.values(), ids=INSTALLS.keys())
def test_the_other_pods_keep_their_route_to_the_store_and_the_llm(values):
    policies, pods = installed(values)
    others = {p.what for p in pods if not p.candidate}
    assert {
        "proposal",
        "analysis",
        "Deployment kv-kubevolve-operator",
        "StatefulSet kv-kubevolve-weaviate",
    } <= others
    restricted = [
        p.what for p in pods if not p.candidate and egress_rules(policies, p.namespace, p.labels) is not None
    ]
    assert restricted == []


# --- the checks catch what they are for ------------------------------------------------------------------


def _policy(
    name: str, namespace: str, selector: dict[str, Any], egress: list[dict[str, Any]]
) -> dict[str, Any]:
    spec = {"podSelector": selector, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": egress}
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


STORE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "weaviate"}},
        }
    ],
    "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 50051}],
}


def test_the_removed_store_route_would_be_caught_as_dead():
    """`kubevolve-evaluation-egress` as the chart and `lab create` made it until it was removed."""
    policies, pods = installed({})
    unlabelled = {
        "matchLabels": {"kubevolve.io/role": "evaluate"},
        "matchExpressions": [{"key": "kubevolve.io/network", "operator": "DoesNotExist"}],
    }
    old = _policy("kubevolve-evaluation-egress", LAB, unlabelled, [copy.deepcopy(DNS_EGRESS), STORE])
    assert dead([*policies, old], pods) == [f"{LAB}/kubevolve-evaluation-egress"]
    # a policy for a pod in another namespace than its own is dead too
    elsewhere = _policy("steps", "nowhere", {"matchLabels": {"kubevolve.io/role": "propose"}}, [])
    assert dead([*policies, elsewhere], pods) == ["nowhere/steps"]


def _its_peers(trainjob: str, **beside: Any) -> list[dict[str, Any]]:
    return [{"to": [{**beside, "podSelector": {"matchLabels": {TRAINJOB_LABEL: trainjob}}}]}]


OVER_BROAD = {
    # a route to the store for every evaluation pod, labelled or not
    "store route": ("evaluation (judged)", {"kubevolve.io/role": "evaluate"}, lambda tj: [STORE]),
    # allow-all egress for a run's pods
    "allow all": ("evaluation (legacy)", {"kubevolve.io/run": "packing"}, lambda tj: [{}]),
    # a peer rule that reaches every pod of the namespace, not only the TrainJob's
    "whole namespace": (
        "TrainJob launcher",
        {"kubevolve.io/network": "none"},
        lambda tj: [{"to": [{"podSelector": {}}]}],
    ),
    # the TrainJob's own name, but in every namespace
    "any namespace": (
        "TrainJob node",
        {"kubevolve.io/network": "none"},
        lambda tj: _its_peers(tj, namespaceSelector={}),
    ),
    # its peers, and an address range
    "peers and more": (
        "TrainJob node",
        {"kubevolve.io/network": "none"},
        lambda tj: [{"to": [*_its_peers(tj)[0]["to"], {"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
    ),
}


@pytest.mark.parametrize("candidate, selector, egress", OVER_BROAD.values(), ids=OVER_BROAD.keys())
def test_an_over_broad_policy_is_caught(candidate, selector, egress):
    policies, pods = installed({})
    (pod,) = [p for p in pods if p.what == candidate and p.namespace == LAB]
    assert escapes(policies, pod) == []
    added = _policy("added", LAB, {"matchLabels": selector}, egress(pod.trainjob))
    problems = escapes([*policies, added], pod)
    assert len(problems) == 1 and "may send" in problems[0], problems
    # the TrainJob's own peer rule and DNS, in a policy of their own, are what a TrainJob pod may have
    if pod.trainjob:
        assert (
            escapes(
                [
                    *policies,
                    _policy("same", LAB, {"matchLabels": selector}, _its_peers(pod.trainjob) + [DNS_EGRESS]),
                ],
                pod,
            )
            == []
        )


OVER_BROAD_INGRESS = {
    "from anywhere": lambda tj: [{}],
    "from every pod of the namespace": lambda tj: [{"from": [{"podSelector": {}}]}],
    "from its TrainJob's name in any namespace": lambda tj: _its_peers(tj, namespaceSelector={}),
}


@pytest.mark.parametrize("ingress", OVER_BROAD_INGRESS.values(), ids=OVER_BROAD_INGRESS.keys())
def test_an_over_broad_ingress_is_caught(ingress):
    """Whatever may connect to a candidate's pod can carry data out of it: ingress from anything but its
    TrainJob's own pods is an escape."""
    policies, pods = installed({})
    (pod,) = [p for p in pods if p.what == "TrainJob node" and p.namespace == LAB]
    assert escapes(policies, pod) == []
    added = _policy("added", LAB, {"matchLabels": {"kubevolve.io/role": "evaluate"}}, [])
    added["spec"]["ingress"] = [{"from": r["to"]} if "to" in r else r for r in ingress(pod.trainjob)]
    problems = escapes([*policies, added], pod)
    assert len(problems) == 1 and "may be reached by" in problems[0], problems


def test_a_candidate_pod_the_isolation_policy_misses_is_caught():
    policies, pods = installed({})
    (pod,) = [p for p in pods if p.what == "evaluation (judged)" and p.namespace == LAB]
    unlabelled = replace(pod, labels={k: v for k, v in pod.labels.items() if k != "kubevolve.io/role"})
    assert escapes(policies, unlabelled) == [
        f"evaluation (judged) in {LAB}: not selected by {ISOLATION_POLICY_NAME}",
        f"evaluation (judged) in {LAB}: no policy restricts its egress",
        f"evaluation (judged) in {LAB}: no policy restricts its ingress",
    ]


def test_an_evaluation_pod_missing_its_network_label_is_still_isolated():
    """The isolation policy selects evaluation pods by role alone: a builder that forgot the network label
    would not let candidate code out."""
    policies, pods = installed({})
    (pod,) = [p for p in pods if p.what == "evaluation (judged)" and p.namespace == LAB]
    unlabelled = replace(pod, labels={k: v for k, v in pod.labels.items() if k != "kubevolve.io/network"})
    assert escapes(policies, unlabelled) == []
