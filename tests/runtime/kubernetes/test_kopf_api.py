"""The operator uses kopf's public API only (issue 14, defect 11: it imported kopf._core.intents.registries
for the registry that logs in by default), and still logs in as kopf does by default: with the kubernetes
client's configuration, here a kubeconfig for the chart's ServiceAccount on the strict kmock."""

from __future__ import annotations

import ast

import kubernetes
import yaml

from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.main import start_operator
from kubevolve.testing import RUNS
from tests.kit.cluster import OPERATOR
from tests.kit.paths import REPO
from tests.runtime.kubernetes.conftest import run_manifest, run_object, until

PACKAGE = REPO / "operator" / "kubevolve"


def private_kopf_uses(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kopf._"):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("kopf._")]
        elif (
            isinstance(node, ast.Attribute) and node.attr.startswith("_") and isinstance(node.value, ast.Name)
        ) and node.value.id == "kopf":
            found.append(f"kopf.{node.attr}")
    return found


def test_no_module_uses_kopfs_private_modules():
    uses = {str(p.relative_to(REPO)): private_kopf_uses(p) for p in sorted(PACKAGE.rglob("*.py"))}
    assert {path: found for path, found in uses.items() if found} == {}


async def test_the_operator_logs_in_as_kopf_does_by_default(
    kmock, api, operator_config, toy_task, tmp_path, monkeypatch
):
    url, token = str(kmock.url), kmock.policy.token_for(OPERATOR)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
        "current-context": "kmock",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    # as $KUBECONFIG would be, had it been set before the client was imported (it reads it then)
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig")
    )
    default = kubernetes.client.Configuration.get_default_copy()  # the login replaces the client's default
    running = await start_operator(operator_config, Kube.for_server(url, token))  # no login: kopf's default
    try:
        await api.create(RUNS, run_manifest("login", "toy"))
        await until(
            lambda: (run_object(kmock, "login") or {}).get("metadata", {}).get("finalizers"),
            20,
            "a finalizer",
        )
    finally:
        await running.stop()
        kubernetes.client.Configuration.set_default(default)
    assert kmock.policy.by_identity[OPERATOR.user] > 0
