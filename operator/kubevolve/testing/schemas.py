"""Objects checked as strictly as a real API server checks them: built-in kinds against the Kubernetes 1.35
OpenAPI schemas (the `kubernetes-validate` package's strict variant: unknown fields are errors), custom
resources against their CRD's `openAPIV3Schema` (with `jsonschema`), plus the checks the API server makes
beyond the schema where kubevolve's objects could fail them:

- resource quantities (`8GB` is refused with a 422: the published schemas type a quantity as any string);
- container requests at most their limits, and requests equal to limits for extended resources (GPUs);
- metadata: names (DNS subdomains; a Job's name, which becomes a label value, at most 63 characters), label
  keys and values, the body's namespace equal to the request's;
- a CRD version that is not served is refused; a deprecated one is reported as a warning, as the API server
  sends its `Warning` header.

What is not checked, and said so: CEL rules (`x-kubernetes-validations`) and the uniqueness of list-map keys in
CRDs (counted in `CrdSchema.unchecked`), immutability on update, defaulting, and admission webhooks.

Unknown fields: a real API server, asked without `fieldValidation=Strict` (the Python client never asks), drops
them with a warning rather than refusing; a field it drops is a field the operator thinks it set, so here it
is an error.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
from packaging.version import Version
from referencing import Registry, Resource

from kubevolve.core.quantity import QUANTITY_PATTERN, parse_quantity

KUBERNETES_VERSION = "1.35"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage"}


# --- built-in kinds: kubernetes-validate's strict 1.35 schemas ------------------------------------------


def _schema_dir(version: str) -> str:
    """The newest schema set kubernetes-validate ships that is not newer than `version`."""
    ok = [v for v in kv_utils.all_versions() if Version(v) <= Version(f"{version}.999")]
    if not ok:
        raise ValueError(
            f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {version}"
        )
    return f"v{ok[-1]}-local-strict"


@lru_cache(maxsize=4)
def _definitions(version: str) -> Resource:
    defs = kv_utils.schema_contents(
        f"kubernetes-json-schema/{_schema_dir(version)}/_definitions.json", version
    )
    defs = copy.deepcopy(defs)
    defs["$defs"]["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "anyOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number"}, {"type": "null"}]
    }
    return Resource.from_contents(defs)


@lru_cache(maxsize=256)
def _builtin_validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    name = f"kubernetes-json-schema/{_schema_dir(version)}/{kind.lower()}-{group_version}.json"
    try:
        schema = kv_utils.schema_contents(name, version)
    except FileNotFoundError:
        return None
    registry: Registry = Resource.from_contents(schema) @ Registry()
    registry = _definitions(version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_version(version: str = KUBERNETES_VERSION) -> str:
    """The Kubernetes version whose schemas are used for `version` (the nearest one shipped)."""
    return _schema_dir(version).removeprefix("v").split("-")[0]


# --- custom resources: a CRD's openAPIV3Schema as JSON Schema ------------------------------------------

_KEEP = {
    "type",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
    "multipleOf",
}


@dataclass
class CrdSchema:
    """One served version of a CRD as a JSON Schema validator; `unchecked` counts what it cannot check."""

    group: str
    version: str
    kind: str
    deprecated: str | None
    validator: jsonschema.Draft4Validator
    unchecked: dict[str, int] = field(default_factory=dict)


def _convert(node: Mapping[str, Any], unchecked: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("type", None)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node and not node.get("x-kubernetes-int-or-string"):
            out[key] = [_convert(n, unchecked) for n in node[key]]
    if "not" in node:
        out["not"] = _convert(node["not"], unchecked)
    if "properties" in node:
        out["properties"] = {k: _convert(v, unchecked) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _convert(node["additionalProperties"], unchecked)
    elif (
        node.get("type") == "object"
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-embedded-resource")
    ):
        out["additionalProperties"] = False  # pruned by the API server: an error here (see the module doc)
    if "items" in node:
        out["items"] = _convert(node["items"], unchecked)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    for key in ("x-kubernetes-validations", "x-kubernetes-list-map-keys"):
        if key in node:
            unchecked[key] = unchecked.get(key, 0) + (
                len(node[key]) if key == "x-kubernetes-validations" else 1
            )
    return out


def crd_schemas(crd: Mapping[str, Any]) -> list[CrdSchema]:
    """A validator per served version of a CustomResourceDefinition."""
    spec = crd["spec"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        unchecked: dict[str, int] = {}
        schema = _convert(version["schema"]["openAPIV3Schema"], unchecked)
        schema.setdefault("properties", {})["metadata"] = {"type": "object"}  # checked as ObjectMeta below
        deprecated = (
            version.get("deprecationWarning") or f"{spec['group']}/{version['name']} is deprecated"
            if version.get("deprecated")
            else None
        )
        out.append(
            CrdSchema(
                spec["group"],
                version["name"],
                spec["names"]["kind"],
                deprecated,
                jsonschema.Draft4Validator(schema),
                unchecked,
            )
        )
    return out


# --- the validator --------------------------------------------------------------------------------------


@dataclass
class Verdict:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class ObjectValidator:
    """Validates objects as a 1.35 API server would; custom kinds need their CRD (`add_crd`)."""

    def __init__(self, crds: Iterable[Mapping[str, Any]] = (), version: str = KUBERNETES_VERSION):
        self.version = version
        self.crds: dict[tuple[str, str], CrdSchema] = {}  # (apiVersion, kind) -> schema
        self.groups: set[str] = set()  # groups whose CRDs are known: any other version of them is unserved
        for crd in crds:
            self.add_crd(crd)

    def add_crd(self, crd: Mapping[str, Any]) -> None:
        for schema in crd_schemas(crd):
            self.crds[(f"{schema.group}/{schema.version}", schema.kind)] = schema
            self.groups.add(schema.group)

    def knows(self, obj: Mapping[str, Any]) -> bool:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        group = api_version.split("/")[0] if "/" in api_version else ""
        return (api_version, kind) in self.crds or group in self.groups or self._builtin(obj) is not None

    def _builtin(self, obj: Mapping[str, Any]) -> jsonschema.Draft202012Validator | None:
        return _builtin_validator(self.version, str(obj.get("kind", "")), str(obj.get("apiVersion", "")))

    def validate(self, obj: Mapping[str, Any], namespace: str | None = None) -> Verdict:
        """Every error and warning, each naming the field. `namespace`: the request's, if any."""
        verdict = Verdict()
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        group = api_version.split("/")[0] if "/" in api_version else ""
        custom = self.crds.get((api_version, kind))
        if custom is not None:
            verdict.errors += _schema_errors(custom.validator, obj)
            if custom.deprecated:
                verdict.warnings.append(f"{kind} {api_version}: {custom.deprecated}")
        elif group in self.groups:
            verdict.errors.append(f"{api_version} {kind} is not served (no such version or kind in its CRD)")
            return verdict
        else:
            builtin = self._builtin(obj)
            if builtin is None:
                verdict.errors.append(f"no schema for {api_version} {kind} in Kubernetes {self.version}")
                return verdict
            verdict.errors += _schema_errors(builtin, obj)
        verdict.errors += _metadata_errors(obj, namespace)
        verdict.errors += _resource_errors(obj)
        return verdict


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _schema_errors(validator: jsonschema.Validator, obj: Mapping[str, Any]) -> list[str]:
    out = []
    for error in validator.iter_errors(obj):
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties") or {}))
            for name in extra:
                where = _path(error)
                out.append(f"{where + '.' if where != '(root)' else ''}{name}: unknown field")
            continue
        if error.validator == "anyOf" and any(
            o.get("pattern") == QUANTITY_PATTERN for o in error.validator_value
        ):
            out.append(
                f"{_path(error)}: Invalid value: {error.instance!r}: quantities must match the regular expression '{QUANTITY_PATTERN}'"
            )
            continue
        message = error.message if len(error.message) < 300 else error.message[:300] + "..."
        out.append(f"{_path(error)}: {message}")
    return out


def _label_errors(labels: Mapping[str, Any], where: str) -> list[str]:
    out = []
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or not (
            0 < len(name) <= 63 and _LABEL_VALUE.match(name)
        ):
            out.append(f"{where}: Invalid value: {key!r}: not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            out.append(
                f"{where}.{key}: Invalid value: {value!r}: a label value is at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends"
            )
    return out


def _metadata_errors(obj: Mapping[str, Any], namespace: str | None) -> list[str]:
    meta = obj.get("metadata") or {}
    out = []
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        out.append("metadata.name: Required value: name or generateName is required")
    elif name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        out.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required")
    elif name and obj.get("kind") == "Job" and len(name) > 63:  # it becomes the pods' job-name label
        out.append(f"metadata.name: Invalid value: {name!r}: a Job's name must be no more than 63 characters")
    if namespace is not None and meta.get("namespace") not in (None, namespace):
        out.append(
            f"metadata.namespace: Invalid value: {meta['namespace']!r}: does not match the request's {namespace!r}"
        )
    out += _label_errors(meta.get("labels") or {}, "metadata.labels")
    return out


def _containers(obj: Any, path: str = "") -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every container (and init container) of every pod template, wherever in the object it is."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if key in ("containers", "initContainers") and isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, Mapping):
                        yield f"{here}[{i}]", item
            else:
                yield from _containers(value, here)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _containers(item, f"{path}[{i}]")


def _resource_errors(obj: Mapping[str, Any]) -> list[str]:
    out = []
    for where, container in _containers({k: v for k, v in obj.items() if k != "metadata"}):
        resources = container.get("resources") or {}
        out += _requirements_errors(resources, f"{where}.resources")
    return out


def _requirements_errors(resources: Mapping[str, Any], where: str) -> list[str]:
    """Requests at most limits; extended resources (no '/'-less standard name) with requests equal limits."""
    out = []
    parsed: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        for name, value in (resources.get(part) or {}).items():
            try:
                parsed.setdefault(part, {})[name] = parse_quantity(value)
            except ValueError:
                continue  # the schema check names it
    requests, limits = parsed.get("requests", {}), parsed.get("limits", {})
    for name, request in requests.items():
        if name in limits and request > limits[name]:
            out.append(f"{where}.requests.{name}: Invalid value: must be less than or equal to {name} limit")
        extended = name not in _STANDARD_RESOURCES and not name.startswith("hugepages-")
        if extended and name in limits and request != limits[name]:
            out.append(f"{where}.requests.{name}: Invalid value: must be equal to {name} limit")
        if extended and name not in limits:
            out.append(
                f"{where}.limits.{name}: Required value: Limit must be set for non overcommitable resources"
            )
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what `application/merge-patch+json` does to an object)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def as_json(obj: Any) -> Any:
    """A plain JSON copy (kmock's objects hold views and datetimes)."""
    return json.loads(json.dumps(obj, default=str))
