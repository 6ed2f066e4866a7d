"""A pod runs as its ServiceAccount, as on a cluster: a pod that names one that does not exist is never created
(the Job fails with the ServiceAccount admission's message), and the pod's processes get a kubeconfig for the
API server with that ServiceAccount's token (the TokenRequest API) only when the pod mounts a token; otherwise
they can reach the API server only anonymously."""

from __future__ import annotations

import json
from pathlib import Path

from kubevolve.testing import Api, ApiError
from kubevolve.testing.pod_objects import pod_spec_of


async def admit_service_account(api: Api, job: dict) -> str | None:
    """The ServiceAccount admission: a pod whose ServiceAccount does not exist is refused."""
    account = pod_spec_of(job).get("serviceAccountName")
    if not account or account == "default":
        return None
    namespace = job["metadata"]["namespace"]
    if await api.get("v1/serviceaccounts", namespace, account) is None:
        return f"FailedCreate: error looking up service account {namespace}/{account}: not found"
    return None


async def pod_credentials(api: Api, job: dict, folder: Path) -> dict[str, str]:
    """The pod's view of the API server: a kubeconfig, with its ServiceAccount's token if it mounts one."""
    pod, namespace = pod_spec_of(job), job["metadata"]["namespace"]
    account = pod.get("serviceAccountName") or "default"
    mounts = pod.get("automountServiceAccountToken")
    if mounts is None:  # the ServiceAccount decides
        sa = await api.get("v1/serviceaccounts", namespace, account) if account != "default" else None
        mounts = (sa or {}).get("automountServiceAccountToken", True)
    user: dict[str, str] = {}
    if mounts:
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        async with api.session.post(api.url + path, json={"spec": {}}) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, f"no token for {namespace}/{account}")
            user = {"token": (await resp.json())["status"]["token"]}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": api.url}}],
        "users": [{"name": "pod", "user": user}],
        "contexts": [{"name": "pod", "context": {"cluster": "kmock", "user": "pod", "namespace": namespace}}],
        "current-context": "pod",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kubeconfig").write_text(json.dumps(config))
    return {"KUBECONFIG": str(folder / "kubeconfig")}
