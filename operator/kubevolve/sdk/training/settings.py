"""A task's training settings per stage, from `training.yaml` in the task folder.

`task.yaml` describes what the engine needs (stages, limits, checks); how much a stage trains (steps, tokens,
widths, seeds) and the DeepSpeed ZeRO section are the task's own business, so they live beside it:

    defaults: {width: 64, layers: 2}      # every stage starts from these
    stages:
      quick: {steps: 200}
      full: {steps: 4000, width: 256}
    deepspeed: {zero_optimization: {stage: 2}, bf16: {enabled: auto}}

`load_settings(path, stage)` returns the stage's settings merged over the defaults (nested mappings are
merged key by key, so a stage overrides only what it names), with the `deepspeed` section under the key
`deepspeed` (None when the file has none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubevolve.errors import KubevolveError


class SettingsError(KubevolveError, ValueError):
    pass


def load_settings(path: str | Path, stage: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SettingsError(f"{path}: cannot read the training settings: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise SettingsError(f"{path}: expected a mapping with a 'stages' mapping")
    unknown = set(data) - {"defaults", "stages", "deepspeed"}
    if unknown:
        raise SettingsError(f"{path}: unknown top-level field(s) {sorted(unknown)}")
    stages = data["stages"]
    if stage not in stages:
        raise SettingsError(f"{path}: no settings for stage {stage!r} (stages: {sorted(stages)})")
    merged = merge(data.get("defaults") or {}, stages[stage] or {})
    merged["deepspeed"] = data.get("deepspeed")
    return merged


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, recursively for mappings present in both; neither argument is modified."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
