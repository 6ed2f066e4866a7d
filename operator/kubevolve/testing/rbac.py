"""Kubernetes RBAC, evaluated as the API server's authoriser does, over plain objects (a rendered Helm chart,
the RoleBindings `kubevolve lab create` prints, the bindings stored in kmock).

- `request_attributes` turns an HTTP request into the attributes RBAC decides on (verb, API group, resource,
  subresource, namespace, name), following kube-apiserver's RequestInfoFactory: GET without a name is `list`,
  `?watch=true` is `watch`, DELETE without a name is `deletecollection`, PUT is `update`, PATCH `patch`;
- `RbacPolicy.authorize` finds the rule that allows a request, or None: ClusterRoleBindings grant everywhere,
  RoleBindings in their namespace only; rules match by apiGroups, resources (`*`, `jobs/status`, `*/status`,
  `jobs/*`), verbs (`*`), resourceNames (a named request only: never `create`, `list` or `watch`, as in
  Kubernetes) and nonResourceURLs (a trailing `*` is a prefix); ClusterRoles with an `aggregationRule` get the
  rules of the ClusterRoles their selectors pick; `system:masters` is allowed everything, as the API server
  allows it before RBAC runs;
- `BOOTSTRAP_POLICY`: what every Kubernetes cluster grants `system:authenticated` by default (discovery and
  the version, nothing else), so that clients can find the resources they were granted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubevolve.testing.label_selector import selects

AUTHENTICATED = "system:authenticated"
MASTERS = "system:masters"  # the API server lets this group do anything, without asking RBAC
RBAC_API = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class Identity:
    """Who makes a request: a user name and groups, as an authenticator resolves a token."""

    user: str
    groups: tuple[str, ...] = ()

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Identity:
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)
        return cls(f"system:serviceaccount:{namespace}:{name}", groups)

    @classmethod
    def person(cls, user: str, *groups: str) -> Identity:
        return cls(user, (*groups, AUTHENTICATED))

    def __str__(self) -> str:
        return self.user


ANONYMOUS = Identity("system:anonymous", ("system:unauthenticated",))


@dataclass(frozen=True)
class RequestAttributes:
    """What RBAC decides on. `resource` is the plural; `path` is set for non-resource requests only."""

    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return not self.path

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        if not self.is_resource:
            return f"{self.verb} {self.path}"
        group = f".{self.api_group}" if self.api_group else ""
        where = f" in namespace {self.namespace!r}" if self.namespace else " cluster-wide"
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {self.full_resource}{group}{named}{where}"


_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> RequestAttributes:
    """The RBAC attributes of an HTTP request to the API server (kube-apiserver's RequestInfoFactory)."""
    parts = [p for p in path.strip("/").split("/") if p]
    verb = _VERBS.get(method.upper(), method.lower())
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return RequestAttributes(verb=verb, path=path)
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if not rest:  # /api/v1 or /apis/group/version: discovery
        return RequestAttributes(verb=verb, path=path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "list"
    if verb in ("list", "get") and query.get("watch") in ("true", "1"):
        verb = "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestAttributes(verb, group, resource, subresource, namespace, name)


@dataclass(frozen=True)
class Grant:
    """The rule that allowed a request: the role, the rule's index in it, and the binding that granted it."""

    role: str  # "ClusterRole/NAME" or "Role/NAMESPACE/NAME"
    rule: int
    binding: str

    def __str__(self) -> str:
        return f"{self.role} rule {self.rule} (through {self.binding})"


@dataclass
class _Binding:
    name: str
    namespace: str  # "" for a ClusterRoleBinding
    role: str  # the key of the role it refers to
    subjects: list[Mapping[str, Any]]


@dataclass
class RbacPolicy:
    """Roles and bindings; `authorize` is the API server's RBAC authoriser over them."""

    roles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "ClusterRole/x" -> rules
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # ClusterRole name -> labels
    aggregation: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ClusterRole -> selectors
    bindings: list[_Binding] = field(default_factory=list)

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> RbacPolicy:
        policy = cls()
        policy.add(objects)
        return policy

    def add(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Add the RBAC objects among `objects` (anything else is ignored)."""
        for obj in objects:
            if not obj or obj.get("apiVersion") != RBAC_API:
                continue
            kind, meta = obj["kind"], obj.get("metadata") or {}
            name, namespace = meta["name"], meta.get("namespace") or ""
            if kind == "ClusterRole":
                self.roles[f"ClusterRole/{name}"] = list(obj.get("rules") or [])
                self.labels[name] = dict(meta.get("labels") or {})
                selectors = (obj.get("aggregationRule") or {}).get("clusterRoleSelectors")
                if selectors:
                    self.aggregation[name] = list(selectors)
            elif kind == "Role":
                self.roles[f"Role/{namespace}/{name}"] = list(obj.get("rules") or [])
            elif kind in ("ClusterRoleBinding", "RoleBinding"):
                ref = obj["roleRef"]
                role = (
                    f"ClusterRole/{ref['name']}"
                    if ref["kind"] == "ClusterRole"
                    else f"Role/{namespace}/{ref['name']}"
                )
                where = "" if kind == "ClusterRoleBinding" else namespace
                label = f"{kind}/{namespace + '/' if where else ''}{name}"
                self.bindings.append(_Binding(label, where, role, list(obj.get("subjects") or [])))

    def merged(self, objects: Iterable[Mapping[str, Any]]) -> RbacPolicy:
        """A copy with more objects (e.g. the bindings stored in the API server right now)."""
        copy = RbacPolicy(dict(self.roles), dict(self.labels), dict(self.aggregation), list(self.bindings))
        copy.add(objects)
        return copy

    def rules_of(self, role: str) -> list[tuple[str, int, dict[str, Any]]]:
        """(role, index, rule) of a role, an aggregated ClusterRole's picked roles included."""
        out = [(role, i, rule) for i, rule in enumerate(self.roles.get(role, []))]
        name = role.removeprefix("ClusterRole/")
        for selector in self.aggregation.get(name, []) if role.startswith("ClusterRole/") else []:
            for other, labels in self.labels.items():
                if other != name and selects(selector, labels):
                    out += [
                        (f"ClusterRole/{other}", i, r)
                        for i, r in enumerate(self.roles[f"ClusterRole/{other}"])
                    ]
        return out

    def authorize(self, identity: Identity, request: RequestAttributes) -> Grant | None:
        """The grant that allows the request, or None (denied). `system:masters` never asks."""
        if MASTERS in identity.groups:
            return Grant(role="(system:masters: no RBAC check)", rule=0, binding="the API server")
        for binding in self.bindings:
            if binding.namespace and binding.namespace != request.namespace:
                continue
            if not any(_subject_matches(s, identity, binding.namespace) for s in binding.subjects):
                continue
            if binding.namespace and not request.is_resource:
                continue  # a RoleBinding never grants non-resource URLs
            for role, index, rule in self.rules_of(binding.role):
                if _rule_allows(rule, request):
                    return Grant(role, index, binding.name)
        return None

    def every_rule(self) -> list[tuple[str, int, dict[str, Any]]]:
        return [(role, i, rule) for role, rules in self.roles.items() for i, rule in enumerate(rules)]


def _subject_matches(subject: Mapping[str, Any], identity: Identity, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return identity.user == name
    if kind == "Group":
        return name in identity.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return identity.user == f"system:serviceaccount:{namespace}:{name}"
    return False


def _has(values: Sequence[str] | None, value: str) -> bool:
    return values is not None and ("*" in values or value in values)


def _resource_matches(patterns: Sequence[str], request: RequestAttributes) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == request.full_resource:
            return True
        if request.subresource and pattern == f"*/{request.subresource}":
            return True
        if pattern == f"{request.resource}/*" and request.subresource:
            return True
    return False


def _rule_allows(rule: Mapping[str, Any], request: RequestAttributes) -> bool:
    if not _has(rule.get("verbs"), request.verb):
        return False
    if not request.is_resource:
        return any(
            url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or []
        )
    if not _has(rule.get("apiGroups"), request.api_group):
        return False
    if not _resource_matches(rule.get("resources") or [], request):
        return False
    names = rule.get("resourceNames")
    return not names or request.name in names


# What kube-apiserver's bootstrap policy grants every authenticated user (system:discovery,
# system:public-info-viewer, system:basic-user): discovery, the version and health, and self reviews.
BOOTSTRAP_POLICY: list[dict[str, Any]] = [
    {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": "system:discovery"},
        "rules": [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                ],
                "verbs": ["get"],
            },
            {"nonResourceURLs": ["/healthz", "/livez", "/readyz"], "verbs": ["get"]},
        ],
    },
    {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": "system:basic-user"},
        "rules": [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    },
    *(
        {
            "apiVersion": RBAC_API,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AUTHENTICATED}],
        }
        for role in ("system:discovery", "system:basic-user")
    ),
]


def is_bootstrap(grant: Grant) -> bool:
    return grant.role.startswith("ClusterRole/system:") or grant.role.startswith("(")


__all__ = [
    "ANONYMOUS",
    "BOOTSTRAP_POLICY",
    "Grant",
    "Identity",
    "RbacPolicy",
    "RequestAttributes",
    "is_bootstrap",
    "request_attributes",
]
