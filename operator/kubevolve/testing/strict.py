"""What a real API server does to a request before it stores anything, for kmock: authentication (bearer
tokens), RBAC authorisation (rbac.py) and strict object validation (schemas.py).

`ApiServerPolicy` is installed on a `ValidatingEmulator` (`emulator.policy = ApiServerPolicy(...)`) and runs on
every request it receives:

- the bearer token names an `Identity`; no token is `system:anonymous`, an unknown one is refused (401);
- RBAC decides with the policy's roles and bindings plus the RBAC objects stored in the emulator (a RoleBinding
  created over the API counts from then on, as on a real cluster); a denial is a 403 naming the identity, the
  verb and the resource, as the API server's is;
- an object that is created, or the result of a patch or update, is validated (built-in kinds against the
  Kubernetes 1.35 schemas, custom resources against their CRDs); an invalid one is a 422 naming the field;
  using a deprecated API version is recorded as a warning;
- an object whose ownerReferences block the owner's deletion (`blockOwnerDeletion: true`) may only be written by
  someone who may `update` the owner's `finalizers` subresource (the OwnerReferencesPermissionEnforcement
  admission plugin, on by default in OpenShift and many managed clusters);
- `POST .../serviceaccounts/NAME/token` (the TokenRequest API the kubelet uses to mount a pod's token) returns
  a token for that ServiceAccount.

Every denial, refusal and warning is also recorded: `problems()` lists them, so that a test fails on a 403 or a
422 that the client only logged (kopf retries and logs, it does not raise). `used` counts the rules that
allowed requests, with the verb and resource of each, so a chart's grants that nothing uses can be found.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import jsonpatch
import kmock

from kubevolve.testing.rbac import (
    ANONYMOUS,
    BOOTSTRAP_POLICY,
    MASTERS,
    RBAC_API,
    Grant,
    Identity,
    RbacPolicy,
    RequestAttributes,
    request_attributes,
)
from kubevolve.testing.schemas import ObjectValidator, as_json, merge_patch

CONTROL_PLANE_TOKEN = "kmock-control-plane"  # the kubelet, Job controller and Kueue stand-ins (kubelet.py)
CONTROL_PLANE = Identity("system:kube-controller-manager", (MASTERS, "system:authenticated"))
_RBAC_KINDS = {
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "clusterroles": "ClusterRole",
    "clusterrolebindings": "ClusterRoleBinding",
}


@dataclass(frozen=True)
class Problem:
    """A request the API server refused (403, 422) or warned about, by whom."""

    kind: str  # "denied", "invalid", "deprecated", "unauthenticated"
    identity: str
    request: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.kind}: {self.identity} {self.request}{detail}"


@dataclass
class ApiServerPolicy:
    """Authentication, RBAC and validation for a ValidatingEmulator (see the module's docstring)."""

    rbac: RbacPolicy
    validator: ObjectValidator | None = None
    tokens: dict[str, Identity] = field(default_factory=dict)
    problems_seen: list[Problem] = field(default_factory=list)
    used: Counter[tuple[Grant, str, str]] = field(default_factory=Counter)  # (grant, verb, resource) -> n
    by_identity: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # time spent here (authorising and validating)
    _serial: itertools.count[int] = field(default_factory=itertools.count)
    _with_stored: RbacPolicy | None = None  # `rbac` plus the RBAC objects stored in the emulator

    @classmethod
    def from_objects(
        cls, objects: Iterable[Mapping[str, Any]], validator: ObjectValidator | None = None
    ) -> ApiServerPolicy:
        """RBAC from the RBAC objects among `objects` (e.g. a rendered chart) and the bootstrap policy."""
        policy = cls(RbacPolicy.from_objects([*BOOTSTRAP_POLICY, *objects]), validator)
        policy.tokens[CONTROL_PLANE_TOKEN] = CONTROL_PLANE
        return policy

    def token_for(self, identity: Identity) -> str:
        """A bearer token that authenticates as `identity`."""
        for token, known in self.tokens.items():
            if known == identity:
                return token
        token = f"kmock-token-{next(self._serial)}-{identity.user}"
        self.tokens[token] = identity
        return token

    def problems(self) -> list[Problem]:
        return list(self.problems_seen)

    def take_problems(self) -> list[Problem]:
        """The problems so far, forgotten (for a test that expects some)."""
        out, self.problems_seen[:] = list(self.problems_seen), []
        return out

    def report(self) -> str:
        return "the API server refused or warned about requests:\n  " + "\n  ".join(
            str(p) for p in self.problems_seen
        )

    # --- the request pipeline -------------------------------------------------------------------------

    def identity(self, request: kmock.Request) -> Identity:
        auth = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if not auth:
            return ANONYMOUS
        token = auth.removeprefix("Bearer ").strip()
        identity = self.tokens.get(token)
        if identity is None:
            self.problems_seen.append(
                Problem(
                    "unauthenticated",
                    "?",
                    f"{request.method.value} {request.url.path}",
                    "unknown bearer token",
                )
            )
            raise kmock.KubernetesError(status=401, reason="Unauthorized", message="Unauthorized")
        return identity

    async def admit(self, emulator: Any, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """Authenticate, authorise and validate; a response to send instead of kmock's, or None to go on."""
        started = time.perf_counter()
        try:
            identity = self.identity(request)
            attrs = request_attributes(request.method.value, request.url.path, dict(request.params))
            self.by_identity[identity.user] += 1
            if self._with_stored is None:
                self._with_stored = self.rbac.merged(_stored_rbac(emulator))
            grant = self._with_stored.authorize(identity, attrs)
            if grant is None:
                self.problems_seen.append(Problem("denied", identity.user, str(attrs)))
                raise kmock.KubernetesError(
                    status=403, reason="Forbidden", message=_forbidden(identity, attrs)
                )
            self.used[(grant, attrs.verb, attrs.full_resource or attrs.path)] += 1
            if (
                attrs.resource == "serviceaccounts"
                and attrs.subresource == "token"
                and attrs.verb == "create"
            ):
                return self._token_request(emulator, attrs)
            self._owner_references(emulator, request, identity, attrs)
            if self.validator is not None:
                self._validate(emulator, request, identity, attrs)
            return None
        finally:
            self.seconds += time.perf_counter() - started

    def stored(self, request: kmock.Request) -> None:
        """After the emulator served a request: a change to RBAC objects counts from the next request on."""
        if request.resource is not None and request.resource.group == "rbac.authorization.k8s.io":
            self._with_stored = None

    def refresh(self) -> None:
        """Re-read the RBAC objects stored in the emulator (after a test put some there directly)."""
        self._with_stored = None

    def _owner_references(
        self, emulator: Any, request: kmock.Request, identity: Identity, attrs: RequestAttributes
    ) -> None:
        """OwnerReferencesPermissionEnforcement: blocking an owner's deletion takes `update` on its finalizers."""
        if attrs.verb not in ("create", "update", "patch") or not isinstance(request.data, dict):
            return
        meta = request.data.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if not ref.get("blockOwnerDeletion"):
                continue
            group = ref["apiVersion"].split("/")[0] if "/" in ref["apiVersion"] else ""
            plural = next(
                (
                    r.plural
                    for r, info in emulator.resources.items()
                    if info.kind == ref["kind"] and (r.group or "") == group
                ),
                ref["kind"].lower() + "s",
            )
            owner = RequestAttributes(
                "update", group, plural, "finalizers", attrs.namespace, ref.get("name", "")
            )
            grant = self._with_stored.authorize(identity, owner) if self._with_stored else None
            if grant is None:
                self.problems_seen.append(
                    Problem("denied", identity.user, str(attrs), f"blockOwnerDeletion needs {owner}")
                )
                raise kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f"{_forbidden(identity, attrs)}: cannot set blockOwnerDeletion if an ownerReference "
                    f"refers to a resource you can't set finalizers on: {_forbidden(identity, owner)}",
                )
            self.used[(grant, owner.verb, owner.full_resource)] += 1

    def _token_request(self, emulator: Any, attrs: RequestAttributes) -> aiohttp.web.StreamResponse:
        exists = attrs.name == "default" or any(
            res.plural == "serviceaccounts"
            and ns == attrs.namespace
            and name == attrs.name
            and not obj.deleted
            for (res, ns, name), obj in list(emulator.objects.items())
        )
        if not exists:
            raise kmock.KubernetesError(
                status=404, reason="NotFound", message=f'serviceaccounts "{attrs.name}" not found'
            )
        token = self.token_for(Identity.service_account(attrs.namespace, attrs.name))
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "status": {"token": token}}
        return aiohttp.web.json_response(body, status=201)

    def _validate(
        self, emulator: Any, request: kmock.Request, identity: Identity, attrs: RequestAttributes
    ) -> None:
        assert self.validator is not None
        if attrs.verb not in ("create", "update", "patch") or not attrs.is_resource:
            return
        data = request.data
        if attrs.verb == "create":
            obj = data if isinstance(data, dict) else None
        else:
            current = _current(emulator, request)
            if current is None:
                return  # kmock answers 404
            if isinstance(data, list):
                try:
                    obj = jsonpatch.apply_patch(current, data)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
                    return  # kmock answers; a failed `test` op is kopf's optimistic concurrency
            elif isinstance(data, dict):
                obj = merge_patch(current, data) if attrs.verb == "patch" else data
            else:
                obj = None
        if not isinstance(obj, dict) or not self.validator.knows(obj):
            return
        verdict = self.validator.validate(obj, attrs.namespace or None)
        for warning in verdict.warnings:
            self.problems_seen.append(Problem("deprecated", identity.user, str(attrs), warning))
        if verdict.errors:
            kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
            message = f'{kind} "{name}" is invalid: ' + "; ".join(verdict.errors)
            self.problems_seen.append(Problem("invalid", identity.user, str(attrs), message))
            raise kmock.KubernetesError(status=422, reason="Invalid", message=message)


def _forbidden(identity: Identity, attrs: RequestAttributes) -> str:
    if not attrs.is_resource:
        return f'forbidden: User "{identity.user}" cannot {attrs.verb} path "{attrs.path}"'
    group = attrs.api_group or '""'
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'{attrs.full_resource} is forbidden: User "{identity.user}" cannot {attrs.verb} resource '
        f'"{attrs.full_resource}" in API group {group} {scope}'
    )


def _stored_rbac(emulator: Any) -> list[dict[str, Any]]:
    out = []
    for (res, _ns, _name), obj in list(emulator.objects.items()):
        if res.group == "rbac.authorization.k8s.io" and not obj.deleted:
            body = as_json(dict(obj.raw))
            body.setdefault("apiVersion", RBAC_API)
            body.setdefault("kind", _RBAC_KINDS.get(res.plural, ""))
            out.append(body)
    return out


def _current(emulator: Any, request: kmock.Request) -> dict[str, Any] | None:
    key = (request.resource, request.namespace, request.name)
    if key not in emulator.objects or emulator.objects[key].deleted:
        return None
    return as_json(dict(emulator.objects[key].raw))
