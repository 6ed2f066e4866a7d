"""Each lab's store key, in a Secret of the lab's namespace that its step pods read (store/weaviate/access.py).

With `lab_keys` on (the chart's bundled Weaviate, where RBAC is on), the operator, which holds the store's
administrator key, makes sure before a lab's first Job that the lab's namespace has the Secret
`kubevolve-store` (key `api-key`) holding a key of the lab's own Weaviate user, whose role reaches that
lab's tenant only. Proposal and analysis pods (and the lab's run browser) read it; evaluation pods, which run
candidate code, get no store key at all.

The operator never reads a Secret (its RBAC has create and patch on this one name only): it creates the
Secret empty, and only when that create succeeds (the Secret was missing) does it issue a key, rotating any
earlier one, and write it in. A Secret that exists is taken as holding a valid key; to replace a lab's key,
delete the Secret and the operator issues a new one before the lab's next Job.
"""

from __future__ import annotations

import asyncio

from kubevolve.runtime.kubernetes import STORE_KEY, STORE_KEY_SECRET
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.store.weaviate.access import LabKeys


def wanted(ctx: OperatorContext, url: str) -> bool:
    return ctx.config.lab_keys and url.split(":", 1)[0].lower() in ("weaviate", "http", "https")


async def ensure_lab_key(ctx: OperatorContext, namespace: str, url: str) -> None:
    """The lab's key Secret exists (once per process and namespace after the first success)."""
    if (namespace, url) in ctx.lab_keys:
        return
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": STORE_KEY_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubevolve-operator", "kubevolve.io/lab": namespace},
        },
        "type": "Opaque",
    }
    if await ctx.kube.create_secret(namespace, body):

        def issue() -> str:
            keys = LabKeys(url)
            try:
                return keys.issue(namespace)
            finally:
                keys.close()

        key = await asyncio.to_thread(issue)
        await ctx.kube.patch_secret(namespace, STORE_KEY_SECRET, {"stringData": {STORE_KEY: key}})
    ctx.lab_keys.add((namespace, url))
