"""The Helm chart, rendered by the real helm binary: lint, schema-checked values, valid Kubernetes objects,
hardened pods, and RBAC that gives a lab viewer read-only access to its own namespace and nothing else."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubevolve.testing.label_selector import selects
from tests.kit.paths import REPO

CHART = REPO / "helm" / "kubevolve"
HELM = REPO / "bin" / "helm"
K8S_VERSION = "1.35.0"

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason="bin/helm is missing: run `make tools` (part of make setup)"
)

EVERY_OPTION = {
    "operator": {
        "replicas": 2,
        "watchNamespaces": ["lab-a", "lab-b"],
        "trainJobs": True,
        "logLevel": "debug",
        "nodeSelector": {"node-role": "control"},
        "tolerations": [{"key": "control", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"team": "ml-infra"},
        "podDisruptionBudget": {"enabled": True},
    },
    "images": {"pullSecrets": [{"name": "registry"}], "pullPolicy": "Always"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "dashboards": {"labels": {"grafana_folder": "kubevolve"}},
    "networkPolicy": {"namespaces": ["lab-a", "lab-b"]},
    "weaviate": {
        "apiKey": {"enabled": True, "existingSecret": "weaviate-key"},
        "persistence": {"size": "100Gi", "storageClass": "fast"},
    },
    "ui": {"enabled": True, "labs": ["lab-a", "lab-b"], "port": 8443},
    "steps": {
        "serviceAccountName": "lab-steps",
        "imagePullSecrets": [{"name": "registry"}, {"name": "mirror"}],
    },
}
EXTERNAL_STORE = {
    "store": {
        "mode": "external",
        "external": {"url": "https://weaviate.example.org:443", "apiKeySecret": {"name": "wv", "key": "k"}},
    }
}


def helm(*args: str, values: dict | None = None, tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    argv = [str(HELM), *args]
    if values is not None:
        assert tmp_path is not None
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        argv += ["-f", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def render(tmp_path: Path, values: dict | None = None) -> list[dict]:
    out = helm(
        "template", "kv", str(CHART), "--namespace", "kubevolve-system", values=values, tmp_path=tmp_path
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.mark.parametrize(
    "values", [None, EVERY_OPTION, EXTERNAL_STORE], ids=["default", "every-option", "external"]
)
def test_lint_and_render_valid_objects(tmp_path, values):
    lint = helm("lint", str(CHART), "--strict", values=values, tmp_path=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(tmp_path, values)
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
    } <= kinds
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in ("monitoring.coreos.com", "kopf.dev"):
            continue  # custom resources of other projects: no schema here
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises, naming the bad field


def test_every_option_renders_what_it_promises(tmp_path):
    docs = render(tmp_path, EVERY_OPTION)
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert by_kind["ServiceMonitor"][0]["metadata"]["labels"]["release"] == "prom"
    operator = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "kv-kubevolve-operator")
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease=kv-kubevolve-operator" in args and "--namespace=lab-b" in args
    (pdb,) = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= operator["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {np["metadata"]["namespace"] for np in by_kind["NetworkPolicy"]} == {
        "kubevolve-system",
        "lab-a",
        "lab-b",
    }
    wv = by_kind["StatefulSet"][0]
    assert wv["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    rules = next(r for r in by_kind["ClusterRole"] if r["metadata"]["name"].endswith("-operator"))["rules"]
    assert any("trainjobs" in r["resources"] for r in rules)
    assert {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainingruntimes"],
        "verbs": ["create"],
    } in rules


def test_external_store_has_no_bundled_weaviate(tmp_path):
    docs = render(tmp_path, EXTERNAL_STORE)
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    env = {
        e["name"]: e
        for e in docs_of(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBEVOLVE_STORE"]["value"] == "https://weaviate.example.org:443"
    assert env["KUBEVOLVE_STORE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wv", "key": "k"}


def docs_of(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": 0}}, "/operator/replicas"),
        ({"operator": {"replica": 2}}, "replica"),
        ({"store": {"mode": "sqlite"}}, "/store/mode"),
        ({"store": {"mode": "external", "external": {"url": "weaviate.local"}}}, "/store/external/url"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"weaviate": {"persistence": {"size": "lots"}}}, "/weaviate/persistence/size"),
        ({"ui": {"enabled": True}}, "/ui/labs"),
        ({"ui": {"labs": ["Lab_A"]}}, "/ui/labs/0"),
        ({"ui": {"labs": ["lab-a", "lab-a"]}}, "/ui/labs"),
    ],
)
def test_bad_values_are_refused_by_the_schema(tmp_path, values, message):
    out = helm("template", "kv", str(CHART), values=values, tmp_path=tmp_path)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr


def test_pods_are_hardened(tmp_path):
    for doc in render(tmp_path, EVERY_OPTION):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in container["resources"]


def test_evaluation_pods_are_isolated_by_the_policy_lab_create_makes(tmp_path):
    from kubevolve.runtime.kubernetes.netpol import evaluation_isolation_policy

    policies = [d for d in render(tmp_path) if d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["kubevolve-evaluation-isolation"]
    (isolation,) = policies
    # the chart and `kubevolve lab create` install the same policy
    assert isolation["spec"] == evaluation_isolation_policy("kubevolve-system")["spec"]
    assert isolation["spec"]["egress"] == [] and isolation["spec"]["ingress"] == []


@pytest.mark.parametrize("gpus", [0, 1], ids=["cpu", "gpu"])
def test_the_candidate_container_has_no_secret_no_token_and_no_egress(tmp_path, gpus):
    """Issue 14: the default chart and the operator's Job builder together give a judged task's evaluation
    pod a candidate container with no Secret reference, no service-account token and no route anywhere, and
    a judge container with no store key either (the operator stores the result)."""
    from kubevolve.core.spec import parse_run_spec
    from kubevolve.runtime.kubernetes.config import OperatorConfig
    from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
    from kubevolve.runtime.kubernetes.resources import TaskFacts

    spec = parse_run_spec(
        {
            "task": "tasks/circle_packing",
            "store": {
                "url": "weaviate://weaviate.kubevolve-system:8080",
                "apiKeySecret": {"name": "store-key"},
            },
            "llm": {"endpoint": "http://vllm:8000/v1", "apiKeySecret": {"name": "llm-key"}},
        }
    )
    facts = TaskFacts(name="circle_packing", metric="sum_radii", gpus=gpus, judged=True)
    config = OperatorConfig(image="kubevolve-worker:1", store_url="weaviate://weaviate:8080")
    job = build_job(
        RunRef("packing", "kubevolve-system", "uid-1"), spec, config, facts, JobRequest("evaluate", "00001")
    )
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    template = job["spec"]["template"]
    pod, labels = template["spec"], template["metadata"]["labels"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"judge", "candidate"}
    judge, candidate = containers["judge"], containers["candidate"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    # no token, no process of the judge's to see, no Secret or ConfigMap in the candidate's container
    assert pod["automountServiceAccountToken"] is False and pod["shareProcessNamespace"] is False
    assert "serviceAccountName" not in pod and not any("projected" in v for v in volumes.values())
    assert "envFrom" not in candidate and all("valueFrom" not in e for e in candidate["env"])
    assert {m["name"] for m in candidate["volumeMounts"]} <= {"sandbox", "dshm"}
    assert all("emptyDir" in volumes[m["name"]] for m in candidate["volumeMounts"])
    assert candidate["securityContext"]["runAsUser"] not in (pod["securityContext"]["runAsUser"], 0)
    assert candidate["securityContext"]["readOnlyRootFilesystem"] is True
    assert candidate["securityContext"]["allowPrivilegeEscalation"] is False
    assert ("nvidia.com/gpu" in candidate["resources"]["limits"]) == bool(gpus)
    # the judge's only Secret is the run's seed; no store key (no store: the operator reads the result)
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in judge["env"] if "valueFrom" in e]
    assert refs == ["packing-judge-seed"] and "--store" not in judge["command"]
    assert judge["terminationMessagePath"] == "/dev/termination-log"

    # no egress: a rendered policy selects the pod and allows nothing; no policy that selects it allows more
    policies = [d for d in render(tmp_path) if d["kind"] == "NetworkPolicy"]
    selecting = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
    assert [p["metadata"]["name"] for p in selecting] == ["kubevolve-evaluation-isolation"]
    (isolation,) = selecting
    assert set(isolation["spec"]["policyTypes"]) == {"Egress", "Ingress"}
    assert isolation["spec"]["egress"] == [] and isolation["spec"]["ingress"] == []


def test_operator_replicas_elect_a_leader_with_a_lease_and_report_readiness(tmp_path):
    """Every replica runs with the same Lease (kopf's peering froze replicas of equal priority, and looked for
    KopfPeering objects the chart never made); only that Lease may be written; /readyz is the readiness probe."""
    for values in (None, {"operator": {"replicas": 3, "watchNamespaces": ["lab-a"]}}):
        docs = render(tmp_path, values)
        (operator,) = [
            d for d in docs_of(docs, "Deployment") if d["metadata"]["name"] == "kv-kubevolve-operator"
        ]
        (container,) = operator["spec"]["template"]["spec"]["containers"]
        assert (
            "--lease=kv-kubevolve-operator" in container["args"]
            and "--health=0.0.0.0:8080" in container["args"]
        )
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert (
            env["KUBEVOLVE_OPERATOR_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.namespace"
        )
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert not [d for d in docs if "kopf.dev" in d["apiVersion"] or "kopf" in d["metadata"]["name"]]
        assert not docs_of(docs, "PodDisruptionBudget")  # an option, off by default
        (role,) = [
            d for d in docs_of(docs, "Role") if d["metadata"]["name"] == "kv-kubevolve-leader-election"
        ]
        assert role["metadata"]["namespace"] == "kubevolve-system"
        named = [r for r in role["rules"] if r.get("resourceNames")]
        assert named == [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["kv-kubevolve-operator"],
                "verbs": ["get", "patch"],
            }
        ]
        (binding,) = [
            d for d in docs_of(docs, "RoleBinding") if d["metadata"]["name"] == "kv-kubevolve-leader-election"
        ]
        assert binding["subjects"][0]["name"] == operator["spec"]["template"]["spec"]["serviceAccountName"]
    out = helm(
        "template",
        "kv",
        str(CHART),
        values={
            "operator": {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}
        },
        tmp_path=tmp_path,
    )
    assert out.returncode != 0 and "/operator/podDisruptionBudget" in out.stderr


def test_the_default_install_has_an_authenticated_store_and_a_key_per_lab(tmp_path):
    """No anonymous access to the bundled Weaviate: a random administrator key (kept across upgrades by
    `lookup`) for the operator alone, RBAC on, and each lab's key made by the operator for its tenant."""
    docs = render(tmp_path)
    (secret,) = [d for d in docs_of(docs, "Secret") if d["metadata"]["name"] == "kv-kubevolve-store-admin"]
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    assert len(key) == 48 and key.isalnum()
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert base64.b64decode(render(tmp_path)[docs.index(secret)]["data"]["api-key"]).decode() != key  # random
    (weaviate,) = docs_of(docs, "StatefulSet")
    env = {e["name"]: e for e in weaviate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"]["value"] == "false"
    assert env["AUTHENTICATION_APIKEY_ENABLED"]["value"] == "true"
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "kv-kubevolve-store-admin",
        "key": "api-key",
    }
    assert env["AUTHORIZATION_RBAC_ENABLED"]["value"] == "true"
    assert env["AUTHENTICATION_DB_USERS_ENABLED"]["value"] == "true"  # the labs' users
    assert env["AUTHORIZATION_RBAC_ROOT_USERS"]["value"] == env["AUTHENTICATION_APIKEY_USERS"]["value"]
    (operator,) = [d for d in docs_of(docs, "Deployment") if d["metadata"]["name"] == "kv-kubevolve-operator"]
    op_env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (
        op_env["KUBEVOLVE_STORE_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kv-kubevolve-store-admin"
    )
    assert op_env["KUBEVOLVE_OPERATOR_LAB_KEYS"]["value"] == "true"
    # the operator writes one Secret name and reads none
    rules = next(d for d in docs_of(docs, "ClusterRole") if d["metadata"]["name"] == "kv-kubevolve-operator")[
        "rules"
    ]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert {v for r in secret_rules for v in r["verbs"]} == {"create", "patch"}
    assert [r.get("resourceNames") for r in secret_rules if "patch" in r["verbs"]] == [["kubevolve-store"]]
    # an existing Secret replaces the generated one; turning the key off is possible, and says so
    docs = render(tmp_path, {"weaviate": {"apiKey": {"existingSecret": "mine"}}})
    assert not [d for d in docs_of(docs, "Secret") if d["metadata"]["name"] == "kv-kubevolve-store-admin"]
    (weaviate,) = docs_of(docs, "StatefulSet")
    env = {e["name"]: e for e in weaviate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    docs = render(tmp_path, {"weaviate": {"apiKey": {"enabled": False}}})
    (weaviate,) = docs_of(docs, "StatefulSet")
    env = {e["name"]: e for e in weaviate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"]["value"] == "true"
    assert not docs_of(docs, "Secret")


def test_chart_copies_of_the_crd_and_dashboards_are_current():
    assert (CHART / "files/crds/evolutionruns.kubevolve.io.yaml").read_text() == (
        REPO / "crds/evolutionruns.kubevolve.io.yaml"
    ).read_text(), "run `make chart` to refresh the chart's copy of the CRD"
    for dashboard in (REPO / "dashboards").glob("*.json"):
        copy = CHART / "files/dashboards" / dashboard.name
        assert copy.exists() and copy.read_text() == dashboard.read_text(), (
            f"run `make chart` ({dashboard.name})"
        )


def test_dashboards_ship_as_labelled_configmaps(tmp_path):
    maps = [d for d in render(tmp_path) if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    assert len(maps) == len(list((REPO / "dashboards").glob("*.json"))) >= 2
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (body,) = cm["data"].values()
        assert json.loads(body)["panels"]


# --- RBAC, evaluated: what may a subject do, given ClusterRoles and namespaced RoleBindings? ---------------


def allowed(
    roles: dict[str, list[dict]],
    bindings: list[dict],
    user: str,
    verb: str,
    group: str,
    resource: str,
    namespace: str,
    name: str | None = None,
) -> bool:
    for binding in bindings:
        if binding["metadata"]["namespace"] != namespace:
            continue
        if not any(s["kind"] == "User" and s["name"] == user for s in binding["subjects"]):
            continue
        for rule in roles.get(binding["roleRef"]["name"], []):
            if (
                (group in rule["apiGroups"] or "*" in rule["apiGroups"])
                and resource in rule["resources"]
                and (verb in rule["verbs"] or "*" in rule["verbs"])
                and ("resourceNames" not in rule or name in rule["resourceNames"])
            ):
                return True
    return False


LAB_BINDINGS = [
    {
        "metadata": {"namespace": "lab-a"},
        "roleRef": {"name": "kubevolve-lab-viewer"},
        "subjects": [{"kind": "User", "name": "alice"}],
    },
    {
        "metadata": {"namespace": "lab-b"},
        "roleRef": {"name": "kubevolve-lab-admin"},
        "subjects": [{"kind": "User", "name": "bob"}],
    },
]


def test_lab_viewer_reads_its_own_runs_and_nothing_else(tmp_path):
    roles = {d["metadata"]["name"]: d["rules"] for d in render(tmp_path) if d["kind"] == "ClusterRole"}
    bindings = LAB_BINDINGS
    runs = ("kubevolve.io", "evolutionruns")
    for verb in ("get", "list", "watch"):
        assert allowed(roles, bindings, "alice", verb, *runs, "lab-a")
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not allowed(roles, bindings, "alice", verb, *runs, "lab-a"), verb
    for verb in ("get", "list", "create", "delete"):
        assert not allowed(roles, bindings, "alice", verb, *runs, "lab-b"), verb  # another lab's runs
    assert not allowed(roles, bindings, "alice", "get", "", "secrets", "lab-a")
    assert allowed(roles, bindings, "alice", "get", "", "pods/log", "lab-a")
    assert allowed(roles, bindings, "bob", "create", *runs, "lab-b")
    assert not allowed(roles, bindings, "bob", "create", *runs, "lab-a")
    assert not allowed(
        roles, bindings, "bob", "get", "", "secrets", "lab-b"
    )  # the chart never grants reading Secrets
    assert not allowed(roles, bindings, "alice", "get", "", "services/proxy", "lab-a", "kv-kubevolve-ui")


def test_the_run_browser_is_one_deployment_per_lab_that_reads_only_its_tenant(tmp_path):
    assert not [d for d in render(tmp_path) if d["metadata"]["name"].endswith("-ui")]  # off by default
    docs = render(tmp_path, EVERY_OPTION)
    operator = next(
        d for d in docs_of(docs, "Deployment") if d["metadata"]["name"] == "kv-kubevolve-operator"
    )
    operator_env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    browsers = [d for d in docs if d["metadata"]["name"] == "kv-kubevolve-ui"]
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in browsers) == [
        ("Deployment", "lab-a"),
        ("Deployment", "lab-b"),
        ("Service", "lab-a"),
        ("Service", "lab-b"),
    ]
    for deployment in docs_of(browsers, "Deployment"):
        lab = deployment["metadata"]["namespace"]
        pod = deployment["spec"]["template"]["spec"]
        assert (
            pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
        )  # no API access
        (container,) = pod["containers"]
        assert container["image"] == operator["spec"]["template"]["spec"]["containers"][0]["image"]
        assert container["command"] == ["kubevolve", "ui"]
        assert container["args"] == [
            f"--store={operator_env['KUBEVOLVE_STORE']['value']}",
            f"--tenant={lab}",  # fixed: the lab's own tenant, whatever the page asks
            "--host=0.0.0.0",
            "--allow-host=*",  # the API server's service proxy in front checks who may reach it
            "--port=8443",
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env["KUBEVOLVE_STORE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "kubevolve-store",  # the lab's own key, never the operator's administrator key
            "key": "api-key",
        }
        assert env["KUBEVOLVE_STORE_API_KEY"] != operator_env["KUBEVOLVE_STORE_API_KEY"]
        assert container["ports"] == [{"name": "http", "containerPort": 8443}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = [s for s in docs_of(browsers, "Service") if s["metadata"]["namespace"] == lab]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}
    proxy = ("", "services/proxy")
    for name in ("kv-kubevolve-ui", "kv-kubevolve-ui:http"):
        assert allowed(roles, LAB_BINDINGS, "alice", "get", *proxy, "lab-a", name)  # her lab's browser
        assert not allowed(roles, LAB_BINDINGS, "alice", "get", *proxy, "lab-b", name)  # not another lab's
        assert allowed(roles, LAB_BINDINGS, "bob", "get", *proxy, "lab-b", name)
    for name in ("kv-kubevolve-weaviate", "kv-kubevolve-weaviate:http", None):  # and no other service
        assert not allowed(roles, LAB_BINDINGS, "alice", "get", *proxy, "lab-a", name)
    assert not allowed(roles, LAB_BINDINGS, "alice", "create", *proxy, "lab-a", "kv-kubevolve-ui")


# What the operator uses (the strict kmock records every request of the operator tests: run them with
# KUBEVOLVE_RBAC_USAGE=FILE, then `python -m tests.kit.rbac_usage FILE`), and what kopf needs where the tests
# cannot show it: namespaces only with operator.watchNamespaces (tests/runtime/kubernetes/test_multi_lab.py).
# Each rule: (group, resource, resourceNames or None) -> verbs.
OPERATOR_NEEDS = {
    ("kubevolve.io", "evolutionruns", None): {"list", "watch", "patch"},
    ("kubevolve.io", "evolutionruns/status", None): {"patch"},
    ("kubevolve.io", "evolutionruns/finalizers", None): {"update"},  # blockOwnerDeletion on its Jobs' owner
    ("batch", "jobs", None): {"list", "watch", "create", "delete"},
    ("", "pods", None): {"list"},  # an evaluation Job's pods (results.py)
    ("", "pods/log", None): {"get"},  # the judge container's result line
    ("", "configmaps", None): {"create", "delete"},  # an evaluation's candidate (handover.py)
    ("", "secrets", None): {
        "create"
    },  # each run's judge seed (handover.py), each lab's store key (labkeys.py)
    ("", "secrets", ("kubevolve-store",)): {"patch"},  # then filled once; never read
    ("", "events", None): {"create"},
    ("", "namespaces", None): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions", None): {"list", "watch"},
    ("trainer.kubeflow.org", "trainjobs", None): {"list", "watch", "get", "create", "delete"},
    ("trainer.kubeflow.org", "trainingruntimes", None): {"create"},  # each run's own MPI runtime
    ("networking.k8s.io", "networkpolicies", None): {"create"},  # each TrainJob's peer policy
}
LEADER_NEEDS = {  # the Role in the release namespace: its own Lease only
    ("coordination.k8s.io", "leases", None): {"create"},
    ("coordination.k8s.io", "leases", ("kv-kubevolve-operator",)): {"get", "patch"},
}


def _grants(role: dict) -> dict[tuple[str, str, tuple[str, ...] | None], set[str]]:
    granted: dict[tuple[str, str, tuple[str, ...] | None], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        names = tuple(rule["resourceNames"]) if "resourceNames" in rule else None
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource, names), set()).update(rule["verbs"])
    return granted


def test_the_operator_is_granted_what_it_uses_and_nothing_else(tmp_path):
    """Issue 14, defect 11: pods, Kueue workloads, jobs patch, runs update were granted and never used."""
    docs = render(tmp_path, {"operator": {"trainJobs": True}})
    (role,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kv-kubevolve-operator"
    ]
    assert _grants(role) == OPERATOR_NEEDS
    (leader,) = [
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")
    ]
    assert _grants(leader) == LEADER_NEEDS
    default = [
        d
        for d in render(tmp_path)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    ]
    assert not any("trainjobs" in r["resources"] for r in default[0]["rules"])  # operator.trainJobs: false
    external = {"store": {"mode": "external", "external": {"url": "https://weaviate.example.org:443"}}}
    external_role = [
        d
        for d in render(tmp_path, external)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    ]
    secret_rules = [r for r in external_role[0]["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]  # judge seeds
    # no per-lab keys: nothing may patch kubevolve-store


def test_step_pods_get_their_service_account_and_registry_secrets(tmp_path):
    """Issue 14, defect 7: the chart's step settings reach the operator; the step ServiceAccount it creates in
    its own namespace (labs get theirs from `kubevolve lab create`) has no API token."""
    for values, account, secrets in [
        (None, "kubevolve-step", ""),
        (EVERY_OPTION, "lab-steps", "registry,mirror"),
    ]:
        docs = render(tmp_path, values)
        operator = next(
            d for d in docs_of(docs, "Deployment") if d["metadata"]["name"] == "kv-kubevolve-operator"
        )
        env = {
            e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["KUBEVOLVE_OPERATOR_STEP_SERVICE_ACCOUNT"] == account
        assert env["KUBEVOLVE_OPERATOR_IMAGE_PULL_SECRETS"] == secrets
        (step,) = [d for d in docs_of(docs, "ServiceAccount") if d["metadata"]["name"] == account]
        assert (
            step["metadata"]["namespace"] == "kubevolve-system"
            and step["automountServiceAccountToken"] is False
        )
    no_account = render(tmp_path, {"steps": {"serviceAccountName": ""}})
    assert [d["metadata"]["name"] for d in docs_of(no_account, "ServiceAccount")] == ["kv-kubevolve"]


def test_a_lab_admin_may_write_the_labs_secrets_but_not_read_them(tmp_path):
    """Issue 14, defect 5: the docs tell a lab admin to create the LLM-key Secret; the role had no Secret verb."""
    roles = {d["metadata"]["name"]: d["rules"] for d in render(tmp_path) if d["kind"] == "ClusterRole"}
    for verb in ("create", "update", "patch", "delete"):
        assert allowed(roles, LAB_BINDINGS, "bob", verb, "", "secrets", "lab-b", "llm-key")
        assert not allowed(roles, LAB_BINDINGS, "bob", verb, "", "secrets", "lab-a", "llm-key")  # not his lab
        assert not allowed(roles, LAB_BINDINGS, "alice", verb, "", "secrets", "lab-a", "llm-key")  # a viewer
    for verb in ("get", "list", "watch"):
        assert not allowed(roles, LAB_BINDINGS, "bob", verb, "", "secrets", "lab-b", "llm-key")


def test_helm_is_real():
    assert shutil.which(str(HELM)) and "v4." in helm("version", "--short").stdout
