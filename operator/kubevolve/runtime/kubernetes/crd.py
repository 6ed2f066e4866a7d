"""The EvolutionRun CRD, generated from the RunSpec pydantic model: one source of truth for the schema.

`python -m kubevolve.runtime.kubernetes.crd > crds/evolutionruns.kubevolve.io.yaml` writes it; a test fails when the file
in the repository is stale. Pydantic's JSON Schema becomes a Kubernetes *structural* schema: references are
inlined, `X | None` becomes `nullable`, `str | int` quantities become `x-kubernetes-int-or-string` (with the
API server's quantity grammar as a pattern), defaults
move into descriptions (the operator applies them; the API server does not rewrite specs), and the one
cross-field rule (a feature axis's max above its min) becomes a CEL validation.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import GROUP, KIND, PLURAL, VERSION

SHORT_NAMES = ["evo"]
# fields of RunSpec that are not part of the CRD: the run's name is metadata.name
EXCLUDED = {"name"}
CEL_RULES = {
    "FeatureAxis": [{"rule": "self.max > self.min", "message": "max must be greater than min"}],
}
_DROP = {"title", "default", "additionalProperties", "$defs"}


def _convert(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic (JSON Schema 2020-12) node to an OpenAPI v3 structural schema node."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        out = _convert(defs[name], defs)
        if name in CEL_RULES:
            out["x-kubernetes-validations"] = CEL_RULES[name]
        return _describe(out, schema)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        types = sorted(s.get("type", "") for s in options)
        if types == ["integer", "string"]:  # with the string's pattern (the API server applies it to strings)
            out = {"x-kubernetes-int-or-string": True}
            pattern = next((s["pattern"] for s in options if "pattern" in s), None)
            if pattern is not None:
                out["pattern"] = pattern
        elif len(options) == 1:
            out = _convert(options[0], defs)
        else:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} in a structural schema")
        if nullable:
            out["nullable"] = True
        return _describe(out, schema)
    out = {}
    for key, value in schema.items():
        if key in _DROP or key == "description":
            continue
        if key == "properties":
            out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(schema["additionalProperties"], defs)
    return _describe(out, schema)


def _describe(out: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Put the model's docstring and its default (as text) first, for `kubectl explain`."""
    text = schema.get("description", "")
    default = schema.get("default")
    if default is not None and not isinstance(default, dict | list):
        shown = default if isinstance(default, str) else json.dumps(default)
        text = f"{text} Default: {shown}.".strip()
    head = {"type": out.pop("type")} if "type" in out else {}
    if text:
        head["description"] = text
    return {**head, **out}


def spec_schema() -> dict[str, Any]:
    raw = RunSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    raw = {**raw, "properties": {k: v for k, v in raw["properties"].items() if k not in EXCLUDED}}
    schema = _convert(raw, defs)
    schema["description"] = (
        "A run of the ASI-Evolve loop (RunSpec). The run's name is metadata.name; spec.task is a path "
        "inside the image (relative paths resolve against the operator's task root)."
    )
    return schema


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }


def status_schema() -> dict[str, Any]:
    counts = [
        "total",
        "proposed",
        "evaluated",
        "rejectedStatic",
        "rejectedNovelty",
        "failedQuick",
        "failedFull",
    ]
    jobs = ["proposing", "evaluating", "analyzing", "waitingAdmission", "failed"]
    return {
        "type": "object",
        "description": "Where the run stands, recomputed by the operator from the store and the run's Jobs.",
        "properties": {
            "phase": {"type": "string", "enum": ["Pending", "Running", "Suspended", "Succeeded", "Failed"]},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "startedAt": {"type": "string", "format": "date-time"},
            "completedAt": {"type": "string", "format": "date-time"},
            "candidates": {
                "type": "object",
                "description": "Candidates by outcome (stored nodes; `proposed` await evaluation).",
                "properties": {name: {"type": "integer"} for name in counts},
            },
            "bestScore": {"type": "number", "description": "The task's primary metric of the best node."},
            "bestNode": {"type": "string"},
            "nextCandidate": {"type": "integer", "description": "The index of the next proposal."},
            "jobs": {"type": "object", "properties": {name: {"type": "integer"} for name in jobs}},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Best", "type": "number", "jsonPath": ".status.bestScore"},
        {"name": "Candidates", "type": "integer", "jsonPath": ".status.candidates.total"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Task", "type": "string", "jsonPath": ".spec.task", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]


def build_crd() -> dict[str, Any]:
    spec = spec_schema()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/name": "kubevolve"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": ["kubevolve"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated from kubevolve.core.spec.RunSpec by `python -m kubevolve.runtime.kubernetes.crd`; do not edit by hand.\n"


def render() -> str:
    plain = json.loads(json.dumps(build_crd()))  # no shared objects, so no YAML anchors
    return HEADER + yaml.safe_dump(plain, sort_keys=False, width=110)


def openapi_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or build_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


if __name__ == "__main__":
    sys.stdout.write(render())
