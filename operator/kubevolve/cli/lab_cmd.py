"""`kubevolve lab create NAME`: the manifests that onboard a lab (a Kubernetes namespace) onto kubevolve.

A lab is a namespace. Onboarding it takes, all labelled `kubevolve.io/lab: NAME`:
- the Namespace (its name is also the lab's tenant in the store);
- RoleBindings that grant the chart's ClusterRoles `kubevolve-lab-admin` (manage EvolutionRuns and the
  lab's Secrets) and `kubevolve-lab-viewer` (read runs) to the given users or groups, in this namespace only;
- the ServiceAccount `kubevolve-step` the operator's step pods run as: no API token, no rights, and the
  registry Secrets to pull step images with (`--image-pull-secret`);
- a Kueue LocalQueue `kubevolve` pointing at a ClusterQueue, the queue a run names in `spec.queueName`;
- a ResourceQuota capping the lab's GPU, CPU and memory requests (when any cap is given);
- the NetworkPolicy `kubevolve-evaluation-isolation`: evaluation pods (untrusted candidate code) reach nothing
  and are reached by nothing; a TrainJob's pods may also reach each other and DNS, through a policy the
  operator makes per TrainJob (netpol.py). No policy selects the lab's other step pods (proposal, analysis):
  they reach the store and the LLM endpoint as the cluster allows.

It prints them as multi-document YAML for review or GitOps; `--apply` creates them in the current kubeconfig context
instead, and server-side-applies the ones that exist already, so re-running it (with changed flags) updates them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import yaml

from kubevolve.cli.common import console, fail
from kubevolve.core.quantity import NON_NEGATIVE_QUANTITY_PATTERN
from kubevolve.errors import KubevolveError
from kubevolve.runtime.kubernetes.netpol import evaluation_isolation_policy

LAB_LABEL = "kubevolve.io/lab"
ADMIN_ROLE, VIEWER_ROLE = "kubevolve-lab-admin", "kubevolve-lab-viewer"
LOCAL_QUEUE = "kubevolve"
STEP_SERVICE_ACCOUNT = "kubevolve-step"  # the chart's steps.serviceAccountName
KUEUE_API = "kueue.x-k8s.io/v1beta2"  # served since Kueue 0.15, stored since 0.16; v1beta1 is deprecated
FIELD_MANAGER = "kubevolve-lab"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(NON_NEGATIVE_QUANTITY_PATTERN)
_RESERVED = ("default", "kube-system", "kube-public", "kube-node-lease")

lab_app = typer.Typer(
    no_args_is_help=True, help="Onboard labs: one namespace, its RBAC, queue and quota each."
)


class LabError(KubevolveError, ValueError):
    pass


def _subjects(entries: list[str], flag: str) -> list[dict[str, str]]:
    """`alice` is a User, `group:ml-team` a Group."""
    subjects = []
    for entry in entries:
        kind, _, name = entry.partition(":") if entry.startswith("group:") else ("user", "", entry)
        if not name:
            raise LabError(f"{flag}: empty name in {entry!r}")
        subjects.append({"kind": kind.capitalize(), "apiGroup": "rbac.authorization.k8s.io", "name": name})
    return subjects


def _quantity(value: str | int | None, flag: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not _QUANTITY.match(text):
        raise LabError(f"{flag} {text!r} is not a Kubernetes quantity (e.g. 16, 500m, 64Gi)")
    return text


def lab_manifests(
    name: str,
    *,
    gpus: int | None = None,
    gpu_resource: str = "nvidia.com/gpu",
    cluster_queue: str | None = "kubevolve",
    cpu: str | None = None,
    memory: str | None = None,
    admins: Sequence[str] = (),
    viewers: Sequence[str] = (),
    image_pull_secrets: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Every object of a lab, Namespace first. Raises LabError for a bad name or value."""
    if not _DNS_LABEL.match(name):
        raise LabError(
            f"lab name {name!r} must be a DNS label: lower-case letters, digits and '-', at most 63"
        )
    if name in _RESERVED or name.startswith("kube-"):
        raise LabError(f"{name!r} is a system namespace, not a lab")
    labels = {"app.kubernetes.io/managed-by": "kubevolve", LAB_LABEL: name}

    def meta(object_name: str) -> dict[str, Any]:
        return {"name": object_name, "namespace": name, "labels": dict(labels)}

    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
    ]
    for role, members, flag in ((ADMIN_ROLE, admins, "--admins"), (VIEWER_ROLE, viewers, "--viewers")):
        if members:
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": meta(role),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": _subjects(list(members), flag),
                }
            )
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(STEP_SERVICE_ACCOUNT),
        "automountServiceAccountToken": False,  # the steps never call the Kubernetes API
    }
    for secret in image_pull_secrets:
        if not _DNS_SUBDOMAIN.match(secret) or len(secret) > 253:
            raise LabError(f"--image-pull-secret {secret!r} is not a valid Secret name")
    if image_pull_secrets:
        account["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    docs.append(account)
    if cluster_queue:
        if not _DNS_SUBDOMAIN.match(cluster_queue) or len(cluster_queue) > 253:
            raise LabError(f"--cluster-queue {cluster_queue!r} is not a valid object name")
        docs.append(
            {
                "apiVersion": KUEUE_API,
                "kind": "LocalQueue",
                "metadata": meta(LOCAL_QUEUE),
                "spec": {"clusterQueue": cluster_queue},
            }
        )
    hard: dict[str, str] = {}
    if gpus is not None:
        if gpus < 0:
            raise LabError("--gpus must be 0 or more")
        hard[f"requests.{gpu_resource}"] = str(gpus)
    if (cpu_q := _quantity(cpu, "--cpu")) is not None:
        hard["requests.cpu"] = cpu_q
    if (memory_q := _quantity(memory, "--memory")) is not None:
        hard["requests.memory"] = memory_q
    if hard:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": meta("kubevolve"),
                "spec": {"hard": hard},
            }
        )
    docs.append(evaluation_isolation_policy(name, labels=labels))
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def apply_manifests(docs: list[dict[str, Any]]) -> list[str]:
    """Server-side apply to the current kubeconfig context; returns `kind/name` of each object applied."""
    import kubernetes
    from kubernetes.dynamic import DynamicClient

    try:
        # read $KUBECONFIG now (the client reads it once, at import); it may list several files
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise LabError(
            f"no Kubernetes cluster to apply to: {exc}. Point KUBECONFIG at a kubeconfig with a current context "
            "(`kubectl config current-context`), or run without --apply and apply the printed YAML yourself"
        ) from exc
    api = kubernetes.client.ApiClient()
    server = api.configuration.host
    try:
        dynamic = DynamicClient(api)
    except Exception as exc:  # discovery is the first request: refused, TLS, DNS, 401
        raise LabError(f"cannot reach the Kubernetes API at {server}: {exc}") from exc
    applied: list[str] = []
    for doc in docs:
        try:
            _apply_one(dynamic, server, doc)
        except LabError as exc:
            done = f" (applied before it: {', '.join(applied)})" if applied else " (nothing was applied)"
            raise LabError(f"{exc}{done}") from exc
        applied.append(f"{doc['kind']}/{doc['metadata']['name']}")
    return applied


def _apply_one(dynamic: Any, server: str, doc: dict[str, Any]) -> None:
    from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, ResourceNotFoundError

    kind, name = doc["kind"], doc["metadata"]["name"]
    try:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=kind)
    except ResourceNotFoundError as exc:
        hint = " (install Kueue, or pass --no-queue)" if kind == "LocalQueue" else ""
        raise LabError(f"{server} does not serve {doc['apiVersion']} {kind}{hint}") from exc
    namespace = doc["metadata"].get("namespace")
    try:
        try:
            resource.create(body=doc, namespace=namespace, field_manager=FIELD_MANAGER)
        except ConflictError:  # it exists: bring it to the printed state, taking over these fields
            resource.server_side_apply(
                body=doc, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True
            )
    except DynamicApiError as exc:
        raise LabError(f"applying {kind}/{name} failed: {exc.status} {exc.reason}: {exc.summary()}") from exc
    except Exception as exc:
        raise LabError(f"applying {kind}/{name} to {server} failed: {exc}") from exc


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@lab_app.command()
def create(
    name: Annotated[str, typer.Argument(help="The lab, i.e. its namespace (a DNS label).")],
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="ResourceQuota: GPUs the lab may request.")
    ] = None,
    gpu_resource: Annotated[str, typer.Option(help="The GPU resource name.")] = "nvidia.com/gpu",
    cluster_queue: Annotated[
        str, typer.Option("--cluster-queue", help="The Kueue ClusterQueue the lab's LocalQueue points at.")
    ] = "kubevolve",
    no_queue: Annotated[
        bool, typer.Option("--no-queue", help="No LocalQueue (clusters without Kueue).")
    ] = False,
    cpu: Annotated[str | None, typer.Option("--cpu", help="ResourceQuota: CPU requests, e.g. 64.")] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help="ResourceQuota: memory requests, e.g. 256Gi.")
    ] = None,
    admins: Annotated[
        str | None, typer.Option("--admins", help="Users (or group:NAME) who manage runs: a,b,group:ml.")
    ] = None,
    viewers: Annotated[
        str | None, typer.Option("--viewers", help="Users (or group:NAME) who read runs.")
    ] = None,
    image_pull_secret: Annotated[
        list[str] | None,
        typer.Option(help="A registry Secret in the lab the step pods pull images with (repeatable)."),
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Apply to the current kubeconfig context.")] = False,
) -> None:
    """Print (or --apply) the Namespace, RoleBindings, step ServiceAccount, LocalQueue, ResourceQuota and
    NetworkPolicy of a lab."""
    try:
        docs = lab_manifests(
            name,
            gpus=gpus,
            gpu_resource=gpu_resource,
            cluster_queue=None if no_queue else cluster_queue,
            cpu=cpu,
            memory=memory,
            admins=_split(admins),
            viewers=_split(viewers),
            image_pull_secrets=image_pull_secret or [],
        )
        if not apply:
            typer.echo(to_yaml(docs), nl=False)
            return
        applied = apply_manifests(docs)
    except LabError as err:
        fail(str(err))
    for item in applied:
        console.print(f"applied {item}", highlight=False)
    queue = "" if no_queue else f"; its runs set spec.queueName: {LOCAL_QUEUE}"
    console.print(f"lab [bold]{name}[/] is ready in namespace {name}{queue}", highlight=False)
