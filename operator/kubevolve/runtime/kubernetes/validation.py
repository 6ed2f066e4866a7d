"""Check an object against the CRD's structural schema the way the API server does (strict field validation).

`kubectl apply` of an EvolutionRun with a misspelt or out-of-range field is refused by the API server with a
message that names the field; this module gives the same answer without a cluster, so the examples and the
emulated API server in the tests are checked against the generated CRD. It covers what the generated schema
uses: types, nullable, enum, bounds, string patterns and lengths, required fields, unknown fields, maps,
int-or-string (with a pattern for its strings, as quantities have) and the `self.a > self.b` CEL rules.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}
_CEL_GT = re.compile(r"^self\.(\w+) > self\.(\w+)$")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _show(value: Any) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every violation, each naming the field by its path (e.g. `spec.budget.maxCandidates`)."""
    if value is None:
        return (
            []
            if schema.get("nullable")
            else [f"{path}: Invalid value: null: {path} in body must not be null"]
        )
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [
                f"{path}: Invalid value: {_show(value)}: {path} in body must be of type integer or string"
            ]
        if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            return [
                f"{path}: Invalid value: {_show(value)}: {path} in body should match '{schema['pattern']}'"
            ]
        return []
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        return [f"{path}: Invalid value: {_show(value)}: {path} in body must be of type {kind}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        errors.append(f"{path}: Unsupported value: {_show(value)}: supported values: {allowed}")
    if kind in ("integer", "number"):
        errors += _bounds(value, schema, path)
    if kind == "string":
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                f"{path}: Invalid value: {_show(value)}: {path} in body should match '{schema['pattern']}'"
            )
    if kind == "object":
        errors += _object(value, schema, path)
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def _bounds(value: float, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "minimum" in schema:
        low, strict = schema["minimum"], schema.get("exclusiveMinimum", False)
        if value < low or (strict and value == low):
            op = "greater than" if strict else "greater than or equal to"
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be {op} {low}")
    if "maximum" in schema:
        high, strict = schema["maximum"], schema.get("exclusiveMaximum", False)
        if value > high or (strict and value == high):
            op = "less than" if strict else "less than or equal to"
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be {op} {high}")
    return errors


def _object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    prefix = f"{path}." if path else ""
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{prefix}{name}: Required value")
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if properties is not None and key in properties:
            errors += validate(item, properties[key], f"{prefix}{key}")
        elif isinstance(extra, dict):
            errors += validate(item, extra, f"{prefix}{key}")
        elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f'{prefix}{key}: unknown field "{prefix}{key}"')
    if not errors:
        for rule in schema.get("x-kubernetes-validations", []):
            match = _CEL_GT.match(rule["rule"])
            if match and not value[match.group(1)] > value[match.group(2)]:
                errors.append(f'{path}: Invalid value: "object": {rule["message"]}')
    return errors


def validate_manifest(manifest: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Check a whole EvolutionRun manifest (metadata is the API server's business, so only its presence)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    errors = validate(body, {**schema, "properties": {**schema["properties"], "metadata": {}}})
    if not (manifest.get("metadata") or {}).get("name"):
        errors.append("metadata.name: Required value: name or generateName is required")
    return errors
