"""One key per lab on a Weaviate with role-based access control (1.30 and later, as the chart deploys it).

Weaviate 1.30 scopes data and tenant permissions to a collection *and a tenant* (its data permission reaches
`data/collections/<C>/shards/<tenant>/objects/*`; every object read and write of a multi-tenant collection is
authorised with the tenant as the shard: usecases/objects/*.go, the gRPC search and batch handlers), and it
creates database users whose API key it returns (`/v1/users/db`, with AUTHENTICATION_DB_USERS_ENABLED).

So each lab (a tenant, i.e. a Kubernetes namespace) gets a database user `kubevolve-lab-<tenant>` holding one
role, `kubevolve-lab-<tenant>`, that may:
- read, create, update and delete objects of kubevolve's four collections in that tenant only;
- read and create that tenant only (a lab's first use of the store creates it);
- read the collections' configuration and kubevolve's schema version (the Meta collection), so that opening
  the store checks its schema; it may not create, change or drop a collection.
A key for one lab is refused by Weaviate for any other tenant, whatever the code holding it does.

The caller holds an administrator key (AUTHORIZATION_RBAC_ROOT_USERS): the operator.
"""

from __future__ import annotations

from typing import Any

from kubevolve.store.base import StoreError
from kubevolve.store.weaviate.connection import WeaviateSettings, check_tenant, connect, with_retries
from kubevolve.store.weaviate.schema import KINDS, META, collection_name


def lab_principal(tenant: str) -> str:
    """The database user and the role of one lab."""
    return f"kubevolve-lab-{check_tenant(tenant)}"


def lab_permissions(prefix: str, tenant: str) -> list[Any]:
    """What a lab's key may do: its own tenant's objects, and reading the schema."""
    from weaviate.classes.rbac import Permissions

    kinds = [collection_name(prefix, k) for k in KINDS]
    meta = collection_name(prefix, META)
    return [
        *Permissions.data(collection=kinds, tenant=tenant, create=True, read=True, update=True, delete=True),
        *Permissions.tenants(collection=kinds, tenant=tenant, create=True, read=True),
        *Permissions.collections(collection=[*kinds, meta], read_config=True),
        *Permissions.data(collection=meta, read=True),
    ]


class LabKeys:
    """Issues labs' keys on one Weaviate, with the administrator key of the environment (KUBEVOLVE_STORE_API_KEY)."""

    def __init__(self, url: str):
        self.settings = WeaviateSettings.from_url(url)
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def issue(self, tenant: str) -> str:
        """A fresh key for the lab's user, created with its role if need be. An existing user's key is
        rotated: call this only where the key will be stored at once (the old one stops working)."""
        principal = lab_principal(tenant)
        client = self._connect()

        def ensure_role() -> None:
            if client.roles.get(role_name=principal) is None:
                client.roles.create(
                    role_name=principal, permissions=lab_permissions(self.settings.prefix, tenant)
                )

        def key() -> str:
            if client.users.db.get(user_id=principal) is None:
                return str(client.users.db.create(user_id=principal))
            return str(client.users.db.rotate_key(user_id=principal))

        where = f"issuing the store key of tenant {tenant!r}"
        with_retries(self.settings, where, ensure_role)
        issued = with_retries(self.settings, where, key)
        with_retries(
            self.settings,
            where,
            lambda: client.users.db.assign_roles(user_id=principal, role_names=[principal]),
        )
        if not issued:
            raise StoreError(f"{where}: Weaviate at {self.settings.url} returned no key")
        return issued

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
