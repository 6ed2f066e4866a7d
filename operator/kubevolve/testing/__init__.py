"""Test and benchmark support for the operator against kmock's emulated Kubernetes API (no cluster).

- `ValidatingEmulator`: kmock's emulator plus the API server's schema check of EvolutionRuns, using the
  generated CRD (so a misspelt field is refused at apply time with a message that names it); with a `policy`
  (strict.py: `ApiServerPolicy`) also authentication, RBAC and strict validation of every object; and pods'
  logs (`pods/NAME/log?container=...&tailLines=...`, from what the kubelet stand-in recorded on the pod);
- `declare_resources`: the API resources the operator touches (kopf hangs without `v1/namespaces`);
- `Api`: a small async client for the test side (apply, patch, delete, read);
- `Kubelet` (kubelet.py): plays the kubelet and Job controller, running each Job's container command as a
  local process (local_pods.py), or its pod in the built image (pods/runner.py), or, for operator-only tests
  and benchmarks, with in-process fake steps.

kmock is a test dependency; import this package only from tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import kmock
from kmock._internal import enums
from kmock._internal.k8s import KubernetesError

from kubevolve.errors import KubevolveError
from kubevolve.runtime.kubernetes import (
    GROUP,
    PLURAL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINING_RUNTIME_PLURAL,
    TRAINJOB_PLURAL,
    VERSION,
)
from kubevolve.runtime.kubernetes.crd import build_crd
from kubevolve.runtime.kubernetes.validation import validate_manifest

if TYPE_CHECKING:
    from kubevolve.testing.strict import ApiServerPolicy

RUNS = f"{GROUP}/{VERSION}/{PLURAL}"
_NAMESPACES = re.compile(r"/api/v1/namespaces(/[^/]+)?")
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
CONFIGMAPS = "v1/configmaps"
LOG_ANNOTATION = (
    "testing.kubevolve.io/log-"  # + container: where the kubelet stand-in keeps a container's log
)
LEASES = "coordination.k8s.io/v1/leases"
TRAINJOBS = f"{TRAINER_GROUP}/{TRAINER_VERSION}/{TRAINJOB_PLURAL}"
TRAINING_RUNTIMES = f"{TRAINER_GROUP}/{TRAINER_VERSION}/{TRAINING_RUNTIME_PLURAL}"
ALL_VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}


class ValidatingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus what the operator relies on from a real API server: EvolutionRuns that the
    generated CRD's schema refuses are refused (HTTP 422, naming the field); created objects get a uid,
    resourceVersion, generation and creationTimestamp; a spec change bumps the generation; `generateName` is
    honoured (kopf's events). The resourceVersion never changes (as in kmock): kopf then cannot tell its own
    patches from stale events and repeats a few bookkeeping patches, which a real API server would not see.
    With a `policy`, every request is first authenticated, authorised and its object validated (strict.py)."""

    policy: ApiServerPolicy | None = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.method == "GET" and _NAMESPACES.fullmatch(raw_request.path.rstrip("/")):
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _serve_namespaces(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock takes the `namespaces` of /api/v1/namespaces for the namespace prefix of a path and fails:
        Namespaces (read-only: those that hold objects) are served here, as kopf lists and watches them when
        it serves only some namespaces. A watch sends them, then nothing."""
        request = kmock.Request(
            method=raw_request.method,
            url=raw_request.url,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
        )
        try:
            if self.policy is not None:
                await self.policy.admit(self, request)
        except KubernetesError as err:
            return await self._render_error(err)
        names = sorted({ns for (_res, ns, _name) in list(self.objects) if ns})
        items = {
            n: {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}, "resourceVersion": "1"},
                "status": {"phase": "Active"},
            }
            for n in names
        }
        name = raw_request.path.rstrip("/").split("/")[4:]
        if name:
            if name[0] not in items:
                return await self._render_error(
                    KubernetesError(
                        status=404, reason="NotFound", message=f'namespaces "{name[0]}" not found'
                    )
                )
            return aiohttp.web.json_response(items[name[0]])
        if raw_request.query.get("watch") not in ("true", "1"):
            body = {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}}
            return aiohttp.web.json_response({**body, "items": list(items.values())})
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        for item in items.values():
            await response.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
        await asyncio.Event().wait()  # until the client goes (the server cancels the handler)
        return response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.policy is not None:
            answer = await self.policy.admit(self, request)
            if answer is not None:
                return answer
        resource = request.resource
        if resource is not None and resource.plural == "pods" and request.subresource == "log":
            return self._pod_log(request)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):  # kopf's events use generateName
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:10]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")  # kopf's JSON patches test it (kmock never changes it)
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if (
            resource is not None
            and resource.plural == PLURAL
            and request.action == enums.action.UPDATE
            and request.subresource is None
            and request.name is not None
            and isinstance(request.data, dict)
            and "spec" in request.data
        ):  # a spec change bumps the generation, as the API server does
            key = (resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                generation = (self.objects[key].get("metadata") or {}).get("generation", 1) + 1
                request.data.setdefault("metadata", {})["generation"] = generation
        if resource is not None and resource.plural == PLURAL and request.action == enums.action.CREATE:
            errors = validate_manifest(request.data or {}, build_crd())
            if errors:
                kind = f'EvolutionRun.{GROUP} "{(request.data.get("metadata") or {}).get("name")}" is invalid'
                raise KubernetesError(status=422, reason="Invalid", message=f"{kind}: " + "; ".join(errors))
        try:
            response = await super()._handle(request)
            if self.policy is not None:
                self.policy.stored(request)
            return response
        finally:
            if len(self._requests) > self.keep_requests:
                self.trim_request_log()

    def _pod_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A container's log as the kubelet stand-in recorded it on the pod (a real kubelet streams its file)."""
        for (resource, namespace, name), obj in list(self.objects.items()):
            if resource.plural == "pods" and (namespace, name) == (request.namespace, request.name):
                if obj.deleted:
                    break
                annotations = (obj.get("metadata") or {}).get("annotations") or {}
                text = annotations.get(LOG_ANNOTATION + request.params.get("container", ""))
                if text is None:
                    raise KubernetesError(status=400, reason="BadRequest", message="no such container")
                tail = request.params.get("tailLines")
                if tail is not None:
                    text = "".join(text.splitlines(keepends=True)[-int(tail) :])
                limit = request.params.get("limitBytes")  # as the kubelet: counted from the first line sent
                data = text.encode()[: int(limit)] if limit is not None else text.encode()
                return aiohttp.web.Response(body=data, content_type="text/plain")
        raise KubernetesError(status=404, reason="NotFound", message=f'pods "{request.name}" not found')

    keep_requests: ClassVar[int] = 5000  # kmock filters its whole request log on every request: keep it short

    def trim_request_log(self) -> None:
        """Forget the requests served so far (kmock's per-request cost grows with its log)."""
        self._requests.clear()
        for payload in self._payloads:
            payload._requests.clear()


def declare_resources(k: Any, *, trainjobs: bool = True) -> None:
    """Every resource the operator reads or writes, with the verbs kopf needs to see in discovery."""
    info = kmock.ResourceInfo
    k.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs={"list", "watch", "get"})
    # every cluster serves CRDs: kopf watches them (and is denied, or waits, where they are missing)
    k.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch", "get"}
    )
    k.resources["v1/events"] = info(kind="Event", namespaced=True, verbs={"create", "list", "get"})
    k.resources["v1/secrets"] = info(kind="Secret", namespaced=True, verbs=ALL_VERBS)
    k.resources["v1/serviceaccounts"] = info(kind="ServiceAccount", namespaced=True, verbs=ALL_VERBS)
    k.resources[CONFIGMAPS] = info(kind="ConfigMap", namespaced=True, verbs={"get", "create", "delete"})
    k.resources[PODS] = info(kind="Pod", namespaced=True, verbs=ALL_VERBS, subresources={"status", "log"})
    k.resources[RUNS] = info(
        kind="EvolutionRun", namespaced=True, verbs=ALL_VERBS, shortnames={"evo"}, subresources={"status"}
    )
    k.resources[JOBS] = info(kind="Job", namespaced=True, verbs=ALL_VERBS, subresources={"status"})
    k.resources[LEASES] = info(kind="Lease", namespaced=True, verbs=ALL_VERBS)  # leader election
    if trainjobs:
        k.resources[TRAINJOBS] = info(
            kind="TrainJob", namespaced=True, verbs=ALL_VERBS, subresources={"status"}
        )
        k.resources[TRAINING_RUNTIMES] = info(kind="TrainingRuntime", namespaced=True, verbs=ALL_VERBS)


LAB_RESOURCES = {  # what `kubevolve lab create` makes (the Namespace aside: kmock serves namespaces read-only)
    "v1/serviceaccounts": "ServiceAccount",
    "v1/resourcequotas": "ResourceQuota",
    "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
    "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
    "kueue.x-k8s.io/v1beta1/localqueues": "LocalQueue",  # Kueue 0.19 serves both (v1beta1 deprecated)
    "kueue.x-k8s.io/v1beta2/localqueues": "LocalQueue",
}


def declare_lab_resources(k: Any) -> None:
    """The resources of a lab's objects (`kubevolve lab create`), namespaced, with every verb."""
    for resource, kind in LAB_RESOURCES.items():
        k.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=ALL_VERBS)


class Api:
    """The test's side of the API: what `kubectl` would do, over HTTP so that watchers see every change."""

    def __init__(self, url: str, token: str | None = None):
        self.url, self.token = url, token
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.session = aiohttp.ClientSession(headers=headers)

    def as_token(self, token: str | None) -> Api:
        """A client of the same server that authenticates with another bearer token (close it too)."""
        return Api(self.url, token)

    async def close(self) -> None:
        await self.session.close()

    def _path(self, resource: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        group_version, plural = resource.rsplit("/", 1)
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        path = f"{self.url}{base}/namespaces/{namespace}/{plural}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def _send(self, method: str, url: str, body: Any = None, ctype: str = "application/json") -> dict:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, url, data=data, headers={"Content-Type": ctype}) as resp:
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                raise ApiError(resp.status, (payload or {}).get("message", ""))
            return payload

    async def create(self, resource: str, body: dict) -> dict:
        return await self._send("POST", self._path(resource, body["metadata"]["namespace"]), body)

    async def patch(
        self, resource: str, namespace: str, name: str, body: dict, sub: str | None = None
    ) -> dict:
        url = self._path(resource, namespace, name, sub)
        return await self._send("PATCH", url, body, "application/merge-patch+json")

    async def delete(self, resource: str, namespace: str, name: str) -> dict:
        return await self._send("DELETE", self._path(resource, namespace, name))

    async def watch(self, resource: str) -> AsyncIterator[dict]:
        """The watch stream of a resource in every namespace: the existing objects (ADDED), then changes."""
        group_version, plural = resource.rsplit("/", 1)
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.get(
            f"{self.url}{base}/{plural}", params={"watch": "true"}, timeout=timeout
        ) as resp:
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)

    async def list(self, resource: str, namespace: str) -> list[dict]:
        return (await self._send("GET", self._path(resource, namespace))).get("items") or []

    async def get(self, resource: str, namespace: str, name: str) -> dict | None:
        try:
            return await self._send("GET", self._path(resource, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise


class ApiError(KubevolveError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def live_objects(k: Any, resource: str, namespace: str | None = None) -> list[dict]:
    """The objects of a resource that exist now (not deleted), as plain dicts."""
    group_version, plural = resource.rsplit("/", 1)
    out = []
    for (res, ns, _name), obj in list(k.objects.items()):
        same = res.plural == plural and f"{res.group}/{res.version}".lstrip("/") == group_version
        if same and not obj.deleted and (namespace is None or ns == namespace):
            out.append(json.loads(json.dumps(dict(obj.raw), default=str)))
    return out
