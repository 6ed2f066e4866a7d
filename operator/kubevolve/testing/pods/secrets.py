"""A container's Secrets, read from the API server when it starts, as the kubelet reads them: its env values
(secretKeyRef) and, through volumes.py, its Secret volumes."""

from __future__ import annotations

import base64

from kubevolve.testing import Api
from kubevolve.testing.pods.spec import PodError


async def read_secret(api: Api | None, namespace: str, name: str) -> dict[str, str] | None:
    """The Secret's data, decoded; None when it does not exist (or there is no API server)."""
    secret = await api.get("v1/secrets", namespace, name) if api else None
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def container_env(api: Api | None, namespace: str, container: dict) -> dict[str, str]:
    """The env the container's spec gives it: plain values, and Secret keys (an optional one may be missing)."""
    if container.get("envFrom"):
        raise PodError("CreateContainerConfigError", "envFrom is not supported by this runner")
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry or not entry.get("valueFrom"):
            env[entry["name"]] = entry.get("value", "")
            continue
        ref = entry["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise PodError(
                "CreateContainerConfigError", f"env {entry['name']}: only secretKeyRef is supported"
            )
        data = await read_secret(api, namespace, ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            what = (
                f"secret {ref['name']!r} not found"
                if data is None
                else f"secret {ref['name']!r} has no key {ref['key']!r}"
            )
            raise PodError("CreateContainerConfigError", what)
        env[entry["name"]] = data[ref["key"]]
    return env
