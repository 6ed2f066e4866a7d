"""The few Kubernetes API calls the reconciler makes, with the synchronous `kubernetes` client in a thread.

Creating an object that already exists is success (deterministic names make creation idempotent); deleting
one that is gone is success too. Responses are not deserialised into models: nothing reads them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubevolve.runtime.kubernetes import (
    GROUP,
    PLURAL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINING_RUNTIME_PLURAL,
    TRAINJOB_PLURAL,
    VERSION,
)
from kubevolve.runtime.kubernetes.leader import LeaseConflict, LeaseError

API_WAIT: ContextVar[list[float] | None] = ContextVar("kubevolve_api_wait", default=None)


def _fetch(fn: Callable[..., Any], args: tuple, kwargs: dict) -> bytes:
    response = fn(*args, _preload_content=False, **kwargs)
    try:
        return response.data
    finally:
        response.release_conn()


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient, threads: int = 16):
        self.api_client = api_client
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.networking = kubernetes.client.NetworkingV1Api(api_client)
        # told of every 403: the readiness probe shows an operator the API server refuses (health.Health)
        self.on_forbidden: Callable[[str], None] = lambda message: None
        # API calls get their own threads, so that they never queue behind store reads (or the reverse)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube-api")
        self.calls = 0  # API requests made
        self.seconds = 0.0  # time spent awaiting them

    @classmethod
    def for_server(cls, host: str, token: str | None = None, verify_ssl: bool = False) -> Kube:
        """A client for an explicit API server URL (tests against kmock, or a proxy)."""
        config = kubernetes.client.Configuration()
        config.host = host
        config.verify_ssl = verify_ssl
        if token:
            config.api_key = {"authorization": f"Bearer {token}"}
        return cls(kubernetes.client.ApiClient(config))

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: its service account; elsewhere: the kubeconfig (as kubectl does)."""
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """Call the API in a thread; the response body, undecoded."""
        self.calls += 1
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, _fetch, fn, args, kwargs)
        except ApiException as err:
            if err.status == 403:
                self.on_forbidden(f"{fn.__name__}: {err.reason}: {(err.body or b'')[:300]!r}")
            raise
        finally:
            waited = time.perf_counter() - started
            self.seconds += waited
            tally = API_WAIT.get()
            if tally is not None:
                tally[0] += waited

    async def create(self, body: dict[str, Any]) -> bool:
        """Create a Job, TrainJob, TrainingRuntime, ConfigMap or NetworkPolicy; False when it already existed."""
        namespace = body["metadata"]["namespace"]
        try:
            if body["kind"] == "Job":
                await self._call(self.batch.create_namespaced_job, namespace, body)
            elif body["kind"] == "ConfigMap":
                await self._call(self.core.create_namespaced_config_map, namespace, body)
            elif body["kind"] == "NetworkPolicy":
                await self._call(self.networking.create_namespaced_network_policy, namespace, body)
            else:
                await self._call(
                    self.custom.create_namespaced_custom_object,
                    TRAINER_GROUP,
                    TRAINER_VERSION,
                    namespace,
                    TRAINING_RUNTIME_PLURAL if body["kind"] == "TrainingRuntime" else TRAINJOB_PLURAL,
                    body,
                )
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    async def create_trainjob(self, body: dict[str, Any]) -> tuple[str, bool]:
        """Create a TrainJob: its uid (what its own objects name as their owner), and whether it is new (the
        uid of the one that already existed otherwise)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        args = (TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL)
        try:
            data = await self._call(self.custom.create_namespaced_custom_object, *args, body)
            created = True
        except ApiException as err:
            if err.status != 409:
                raise
            data = await self._call(self.custom.get_namespaced_custom_object, *args, name)
            created = False
        return json.loads(data or b"{}")["metadata"]["uid"], created

    async def delete(self, namespace: str, name: str, kind: str = "Job") -> bool:
        """Delete a Job (with its pods), a TrainJob or a ConfigMap; False when it was already gone."""
        try:
            if kind == "Job":
                await self._call(
                    self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
                )
            elif kind == "ConfigMap":
                await self._call(self.core.delete_namespaced_config_map, name, namespace)
            else:
                await self._call(
                    self.custom.delete_namespaced_custom_object,
                    TRAINER_GROUP,
                    TRAINER_VERSION,
                    namespace,
                    TRAINJOB_PLURAL,
                    name,
                    propagation_policy="Background",
                )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": patch},
        )

    async def list_jobs(
        self, namespace: str, selector: dict[str, str], *, trainjobs: bool = False
    ) -> list[dict]:
        """The Jobs (and TrainJobs) whose labels match `selector`, filtered here too."""
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        calls: list[tuple[Callable[..., Any], tuple[str, ...]]] = [
            (self.batch.list_namespaced_job, (namespace,))
        ]
        if trainjobs:
            calls.append(
                (
                    self.custom.list_namespaced_custom_object,
                    (TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL),
                )
            )
        items = []
        for fn, args in calls:
            data = json.loads(await self._call(fn, *args, label_selector=label_selector) or b"{}")
            for item in data.get("items", []):
                item.setdefault("kind", "Job" if fn is self.batch.list_namespaced_job else "TrainJob")
                labels = (item.get("metadata") or {}).get("labels") or {}
                if all(labels.get(k) == v for k, v in selector.items()):
                    items.append(item)
        return items

    async def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict]:
        """The pods whose labels match `selector`, filtered here too."""
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        data = await self._call(self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        items = json.loads(data or b"{}").get("items", [])
        return [
            item
            for item in items
            if all(
                ((item.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items()
            )
        ]

    async def pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str | None:
        """The last lines of a container's log, at most `limit_bytes` of them (counted from the first line
        returned); None when the kubelet cannot give it (gone, rotated)."""
        try:
            data = await self._call(
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                tail_lines=tail_lines,
                limit_bytes=limit_bytes,
            )
        except ApiException:
            return None
        return data.decode(errors="replace")

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Secret; False when it already existed (its content is never read)."""
        try:
            await self._call(self.core.create_namespaced_secret, namespace, body)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self._call(
            self.core.patch_namespaced_secret,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as JSON, or None when there is none (leader.LeaseApi)."""
        try:
            return json.loads(await self._call(self.coordination.read_namespaced_lease, name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise _lease_error(err, f"reading the lease {namespace}/{name}") from err

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(await self._call(self.coordination.create_namespaced_lease, namespace, body))
        except ApiException as err:
            raise _lease_error(err, f"creating the lease {namespace}/{body['metadata']['name']}") from err

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Write the Lease back; LeaseConflict when its resourceVersion is no longer the one in `body`. (A
        merge patch that carries metadata.resourceVersion is a conditional update, as a PUT is: the API
        server's generic registry refuses any update whose resourceVersion is not the stored one.)"""
        try:
            return json.loads(
                await self._call(
                    self.coordination.patch_namespaced_lease,
                    name,
                    namespace,
                    body,
                    _content_type="application/merge-patch+json",
                )
            )
        except ApiException as err:
            raise _lease_error(err, f"writing the lease {namespace}/{name}") from err

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.api_client.close()


def _lease_error(err: ApiException, action: str) -> LeaseError:
    if err.status == 409:
        return LeaseConflict(f"{action}: conflict", 409)
    return LeaseError(f"{action}: HTTP {err.status} {err.reason}", err.status)
