"""Persistent state for runs: pick a store from a URL.

`open_store` is the one place that maps a URL to an implementation, so the CLI, the engine and the operator
accept the same strings: `sqlite:///abs/path.db`, `sqlite:relative.db` or a plain path for the embedded store;
`weaviate://host:port?grpc=50051&secure=false` and `http(s)://host[:port]?...` for the cluster store (see
store/weaviate/connection.py for the options; the API key comes from $KUBEVOLVE_STORE_API_KEY, never from the URL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kubevolve.store.base import SCHEMA_VERSION, NotFound, Store, StoreError
from kubevolve.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_STORE_PATH",
    "SCHEMA_VERSION",
    "NotFound",
    "SQLiteStore",
    "Store",
    "StoreError",
    "default_store_path",
    "default_store_url",
    "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def default_store_path() -> Path:
    """$KUBEVOLVE_HOME/kubevolve.db (~/.kubevolve by default), read when called so tests can redirect it."""
    return Path(os.environ.get("KUBEVOLVE_HOME", "~/.kubevolve")).expanduser() / "kubevolve.db"


def default_store_url() -> str:
    return f"sqlite://{default_store_path().resolve()}"


def __getattr__(name: str) -> Path:
    # DEFAULT_STORE_PATH is computed on access, not at import, so it follows KUBEVOLVE_HOME as set later.
    if name == "DEFAULT_STORE_PATH":
        return default_store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sqlite_path(url: str) -> Path:
    """`sqlite:///abs/x.db` -> /abs/x.db, `sqlite:rel.db` and `sqlite://rel.db` -> rel.db."""
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise StoreError(f"store URL {url!r} names no file (expected sqlite:///abs/path.db)")
    return Path(rest).expanduser()


def open_store(url: str, tenant: str = "default", *, read_only: bool = False) -> Store:
    """Open the store that `url` names, for `tenant`; a SQLite file's parent folders are created.

    `read_only=True` (for viewers such as `kubevolve ui`) writes nothing, not even the schema or the tenant:
    the store and the tenant must exist, and every write method raises StoreError."""
    url = url.strip()
    if not url:
        raise StoreError("empty store URL (expected sqlite:///abs/path.db or a file path)")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url), tenant=tenant, read_only=read_only)
    if scheme in ("weaviate", "http", "https"):
        from kubevolve.store.weaviate import (
            WeaviateStore,  # weaviate-client itself is imported only when connecting
        )

        return WeaviateStore(url, tenant=tenant, read_only=read_only)
    if scheme and (len(scheme) > 1 or url[len(scheme) + 1 :].startswith("//")):
        # a one-letter "scheme" without // is a Windows drive (C:\...), i.e. a plain path
        raise StoreError(f"unsupported store URL {url!r} (expected sqlite:///abs/path.db or a file path)")
    return SQLiteStore(Path(url).expanduser(), tenant=tenant, read_only=read_only)
