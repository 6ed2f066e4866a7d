"""The Kubernetes objects the docs tell people to apply are valid where they will be applied: built-in kinds
against the Kubernetes 1.35 schemas, Kueue's against its published CRDs (issue 14: the multi-tenancy guide's
ClusterQueue used Kueue's deprecated v1beta1)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.kit.cluster import validator
from tests.kit.paths import REPO

DOCS = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md"])
BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def documented_objects() -> list[tuple[str, dict]]:
    out = []
    for path in DOCS:
        for block in BLOCK.findall(path.read_text()):
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc and validator().knows(doc):
                    out.append((f"{path.name}: {doc['kind']} {doc['metadata']['name']}", doc))
    return out


def test_the_docs_show_cluster_objects():
    kinds = {doc["kind"] for _, doc in documented_objects()}
    assert {"ClusterQueue", "ResourceFlavor"} <= kinds


@pytest.mark.parametrize(
    ("where", "doc"), documented_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_documented_object_is_valid_and_current(where, doc):
    verdict = validator().validate(doc)
    assert verdict.errors == [] and verdict.warnings == [], where
