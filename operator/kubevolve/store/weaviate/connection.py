"""How WeaviateStore reaches a server: URL parsing, object ids, connecting, and retrying transient failures.

Nothing here needs a running server, so it is all tested offline (tests/store/test_weaviate_store.py).

A store URL names the HTTP endpoint and, in its query, everything else:

    weaviate://HOST[:PORT]?grpc=50051&secure=false       (PORT defaults to 8080)
    http://HOST[:PORT]?grpc_host=weaviate-grpc.db.svc     (PORT 80; the Weaviate Helm chart's Services)
    https://HOST[:PORT]?grpc_secure=true                  (PORT 443; TLS on HTTP, and on gRPC by default)

Query keys: `grpc` (a port, or HOST:PORT), `grpc_port`, `grpc_host` (default: HOST), `secure`, `grpc_secure` (default: `secure`),
`prefix` (collection name prefix, default `Kubevolve`), `timeout` (seconds per request), `retry` (seconds
spent retrying a failing call before giving up), `consistency` (`one`, `quorum` or `all`; set `quorum` or `all`
on a replicated Weaviate, see WeaviateStore.add_node), `api_key_env` (the variable holding the API key,
default KUBEVOLVE_STORE_API_KEY, which the operator fills from `spec.store.apiKeySecret`; WEAVIATE_API_KEY is
read as a fallback). An API key or a password is refused inside the URL: URLs end up in Job commands and logs.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from kubevolve.store.base import StoreError

DEFAULT_PREFIX = "Kubevolve"
DEFAULT_API_KEY_ENV = "KUBEVOLVE_STORE_API_KEY"
FALLBACK_API_KEY_ENV = "WEAVIATE_API_KEY"
_DEFAULT_PORTS = {"weaviate": 8080, "http": 80, "https": 443}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_KEYS = {"grpc", "grpc_port", "grpc_host", "secure", "grpc_secure", "prefix", "timeout", "retry"}
_KEYS |= {"consistency", "api_key_env"}
_PREFIX = re.compile(r"^[A-Z][A-Za-z0-9_]{0,40}$")
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Weaviate's tenant names; every Kubernetes namespace fits
_NAMESPACE = uuid.UUID("6f1d2c1e-8a43-4c55-9b0e-3d7c2f7e9a10")  # kubevolve's uuid5 namespace, never change it

_T = TypeVar("_T")


def _bool(value: str, key: str, url: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise StoreError(f"store URL {url!r}: {key}={value!r} is not a boolean (use true or false)")


def _number(value: str, key: str, url: str, kind: type = float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number <= 0:
        raise StoreError(f"store URL {url!r}: {key}={value!r} must be a positive number")
    return number


@dataclass(frozen=True)
class WeaviateSettings:
    http_host: str
    http_port: int = 8080
    http_secure: bool = False
    grpc_host: str = ""  # "" means http_host
    grpc_port: int = 50051
    grpc_secure: bool | None = None  # None means http_secure
    prefix: str = DEFAULT_PREFIX
    timeout_s: float = 30.0  # one request
    retry_s: float = 30.0  # retrying a failing call (connection refused, timeout, 5xx) before StoreError
    consistency: str | None = None  # ONE / QUORUM / ALL; None: the server's default
    api_key_env: str = DEFAULT_API_KEY_ENV

    @classmethod
    def from_url(cls, url: str) -> WeaviateSettings:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise StoreError(f"not a Weaviate URL: {url!r} (expected weaviate://, http:// or https://)")
        if parts.username or parts.password:
            raise StoreError(
                f"store URL {url!r} carries credentials; put the API key in the environment variable "
                f"{DEFAULT_API_KEY_ENV} (on Kubernetes: spec.store.apiKeySecret) instead"
            )
        if not parts.hostname:
            raise StoreError(f"store URL {url!r} names no host")
        if parts.path not in ("", "/"):
            raise StoreError(f"store URL {url!r}: a path is not supported (Weaviate serves at the root)")
        try:
            port = parts.port
        except ValueError as exc:
            raise StoreError(f"store URL {url!r}: {exc}") from exc
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if "api_key" in query or "apikey" in query:
            raise StoreError(
                f"store URL {url!r}: an API key must not be part of the URL; set {DEFAULT_API_KEY_ENV} "
                "(or name another variable with api_key_env=...)"
            )
        unknown = sorted(set(query) - _KEYS)
        if unknown:
            raise StoreError(f"store URL {url!r}: unknown option(s) {', '.join(unknown)}")
        secure = scheme == "https"
        if "secure" in query:
            secure = _bool(query["secure"], "secure", url)
        values: dict[str, Any] = {
            "http_host": parts.hostname,
            "http_port": port or _DEFAULT_PORTS[scheme],
            "http_secure": secure,
        }
        grpc = query.get("grpc", "")
        if ":" in grpc or (grpc and not grpc.lstrip("-").isdigit()):  # grpc=HOST:PORT or grpc=HOST
            host, _, grpc = grpc.rpartition(":") if ":" in grpc else (grpc, "", "")
            values["grpc_host"] = host
        if grpc:
            values["grpc_port"] = _number(grpc, "grpc", url, int)
        if "grpc_port" in query:
            values["grpc_port"] = _number(query["grpc_port"], "grpc_port", url, int)
        if query.get("grpc_host"):
            values["grpc_host"] = query["grpc_host"]
        if "grpc_secure" in query:
            values["grpc_secure"] = _bool(query["grpc_secure"], "grpc_secure", url)
        if "prefix" in query:
            values["prefix"] = query["prefix"]
        if "timeout" in query:
            values["timeout_s"] = _number(query["timeout"], "timeout", url)
        if "retry" in query:
            values["retry_s"] = _number(query["retry"], "retry", url)
        if query.get("consistency"):
            values["consistency"] = query["consistency"]
        if query.get("api_key_env"):
            values["api_key_env"] = query["api_key_env"]
        return cls(**values).checked(url)

    def checked(self, url: str = "") -> WeaviateSettings:
        where = f"store URL {url!r}" if url else "Weaviate settings"
        if not _PREFIX.match(self.prefix):
            raise StoreError(
                f"{where}: prefix {self.prefix!r} must start with an upper-case letter and hold only "
                "letters, digits and _ (it begins every collection name)"
            )
        if self.consistency is not None and self.consistency.upper() not in ("ONE", "QUORUM", "ALL"):
            raise StoreError(f"{where}: consistency={self.consistency!r} must be one, quorum or all")
        for port in (self.http_port, self.grpc_port):
            if not 0 < port < 65536:
                raise StoreError(f"{where}: port {port} is out of range")
        return self

    @property
    def grpc_address(self) -> tuple[str, int, bool]:
        secure = self.http_secure if self.grpc_secure is None else self.grpc_secure
        return self.grpc_host or self.http_host, self.grpc_port, secure

    @property
    def url(self) -> str:
        """Where the store lives, for messages: no secret is ever part of it."""
        scheme = "https" if self.http_secure else "http"
        host, port, secure = self.grpc_address
        return f"{scheme}://{self.http_host}:{self.http_port} (gRPC {host}:{port}{', TLS' if secure else ''})"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or os.environ.get(FALLBACK_API_KEY_ENV) or None


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant or ""):
        raise StoreError(
            f"tenant {tenant!r} is not a valid Weaviate tenant name (1-64 letters, digits, '-' or '_')"
        )
    return tenant


def object_uuid(tenant: str, kind: str, key: str) -> uuid.UUID:
    """The Weaviate id of an object: a pure function of what it is, so every retry writes the same object."""
    return uuid.uuid5(_NAMESPACE, f"{tenant}\x1f{kind}\x1f{key}")


# transient failures


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server could not be reached, timed out, or said it is overloaded or restarting."""
    import httpx
    from weaviate import exceptions as wex

    if isinstance(
        exc,
        (
            wex.WeaviateConnectionError,
            wex.WeaviateTimeoutError,
            wex.WeaviateGRPCUnavailableError,
            wex.WeaviateRetryError,
            TimeoutError,
            ConnectionError,
        ),
    ):
        return True
    if isinstance(exc, wex.WeaviateStartUpError):  # not an unsupported server version, say
        return "Could not connect" in str(exc)
    if isinstance(exc, wex.UnexpectedStatusCodeError):
        return exc.status_code in (408, 429, 500, 502, 503, 504)
    if isinstance(exc, wex.WeaviateQueryError):
        # gRPC errors arrive as text. Aggregations, and searches that stayed UNAVAILABLE through the client's
        # own retries, carry the status name ("StatusCode.DEADLINE_EXCEEDED"); searches and batch inserts
        # that ran out of time carry only the details ("Deadline Exceeded"): weaviate/connect/v4.py.
        text = str(exc)
        codes = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "Deadline Exceeded")
        return any(code in text for code in codes)
    return isinstance(exc, httpx.TransportError)  # in case one escapes the client's own wrapping


def with_retries(
    settings: WeaviateSettings,
    action: str,
    fn: Callable[[], _T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> _T:
    """Run `fn`, retrying transient failures with jittered exponential backoff for up to `settings.retry_s`;
    then, or on any other Weaviate error, raise StoreError naming the action and the server."""
    from weaviate.exceptions import WeaviateBaseError

    deadline = clock() + settings.retry_s
    delay, attempts = 0.1, 0
    while True:
        attempts += 1
        try:
            return fn()
        except StoreError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, WeaviateBaseError):
                    raise StoreError(f"{action} failed on Weaviate at {settings.url}: {exc}") from exc
                raise
            left = deadline - clock()
            if left <= 0:
                raise StoreError(
                    f"{action} failed: Weaviate at {settings.url} did not answer after {attempts} attempt(s) "
                    f"in {settings.retry_s:g} s ({type(exc).__name__}: {str(exc)[:300]}); nothing was lost, "
                    "retry when the store is reachable"
                ) from exc
            sleep(min(delay * random.uniform(0.5, 1.0), left))
            delay = min(delay * 2, 5.0)


def connect(settings: WeaviateSettings) -> Any:
    """An open WeaviateClient, retrying refused connections within the retry budget."""
    try:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout
    except ImportError as exc:
        raise StoreError(
            f"the Weaviate store at {settings.url} needs weaviate-client ({exc}): pip install weaviate-client"
        ) from exc

    grpc_host, grpc_port, grpc_secure = settings.grpc_address
    key = settings.api_key()
    timeout = Timeout(
        init=min(settings.timeout_s, 10), query=settings.timeout_s, insert=max(settings.timeout_s, 60)
    )

    def attempt() -> Any:
        return weaviate.connect_to_custom(
            http_host=settings.http_host,
            http_port=settings.http_port,
            http_secure=settings.http_secure,
            grpc_host=grpc_host,
            grpc_port=grpc_port,
            grpc_secure=grpc_secure,
            auth_credentials=Auth.api_key(key) if key else None,
            additional_config=AdditionalConfig(timeout=timeout),
            # no PyPI version probe and no gRPC health ping (the server version is still read over HTTP):
            # an unreachable gRPC port shows at the first query
            skip_init_checks=True,
        )

    return with_retries(settings, "connecting to the store", attempt)
