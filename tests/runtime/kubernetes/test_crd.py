"""The CRD is generated from RunSpec and checked in; the examples are valid against it."""

from __future__ import annotations

import pytest
import yaml

from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes.crd import build_crd, openapi_schema, render
from kubevolve.runtime.kubernetes.reconcile import parse_spec
from kubevolve.runtime.kubernetes.resources import read_task
from kubevolve.runtime.kubernetes.validation import validate, validate_manifest
from tests.kit.paths import REPO

CRD_FILE = REPO / "crds/evolutionruns.kubevolve.io.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_checked_in_crd_is_current():
    assert CRD_FILE.read_text() == render(), (
        "crds/ is stale: run `python -m kubevolve.runtime.kubernetes.crd > crds/evolutionruns.kubevolve.io.yaml`"
    )


def test_crd_shape_for_kubectl():
    crd = build_crd()
    spec, version = crd["spec"], crd["spec"]["versions"][0]
    assert crd["metadata"]["name"] == "evolutionruns.kubevolve.io" and spec["names"]["shortNames"] == ["evo"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Best"] == ".status.bestScore"
    assert (
        columns["Candidates"] == ".status.candidates.total"
        and columns["Age"] == ".metadata.creationTimestamp"
    )
    status = openapi_schema(crd)["properties"]["status"]["properties"]
    assert {
        "phase",
        "conditions",
        "observedGeneration",
        "candidates",
        "bestScore",
        "bestNode",
        "message",
    } <= set(status)


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_spec_schema_is_structural_and_covers_runspec():
    spec = openapi_schema()["properties"]["spec"]
    assert set(spec["properties"]) == set(RunSpec.model_json_schema(by_alias=True)["properties"]) - {"name"}
    assert spec["required"] == ["task"]
    for path, node in _walk(spec):
        assert not {"$ref", "anyOf", "title", "default", "$defs"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert node.get("additionalProperties") is not False, path


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"task": "t", "budget": {"maxCandidatez": 3}}, 'unknown field "spec.budget.maxCandidatez"'),
        ({"task": "t", "sampler": {"kind": "best"}}, 'spec.sampler.kind: Unsupported value: "best"'),
        ({"task": "t", "parallelism": {"evaluators": 0}}, "spec.parallelism.evaluators: Invalid value: 0"),
        ({"task": "t", "seed": "x"}, "spec.seed in body must be of type integer"),
        ({"task": "t", "sampler": {"features": [{"name": "a", "min": 1, "max": 0}]}}, "max must be greater"),
        ({"task": "t", "jobs": {"evaluate": {"gpus": -1}}}, "spec.jobs.evaluate.gpus"),
        ({"task": "t", "jobs": {"evaluate": {"resources": {"limits": {"cpu": 1.5}}}}}, "integer or string"),
        ({"task": "t", "name": "x"}, 'unknown field "spec.name"'),
        ({"budget": {}}, "spec.task: Required value"),
        (
            {"task": "t", "analyzer": {"mode": "sometimes"}},
            'spec.analyzer.mode: Unsupported value: "sometimes"',
        ),
        ({"task": "t", "retrieval": {"mmrLambda": 2}}, "spec.retrieval.mmrLambda: Invalid value: 2"),
        ({"task": "t", "llmJudge": {"neighbours": 11}}, "spec.llmJudge.neighbours: Invalid value: 11"),
    ],
)
def test_bad_fields_are_named(spec, named):
    manifest = {"apiVersion": "kubevolve.io/v1alpha1", "kind": "EvolutionRun", "metadata": {"name": "r"}}
    errors = validate_manifest({**manifest, "spec": spec}, build_crd())
    assert any(named in e for e in errors), errors


def test_the_science_settings_reach_the_crd():
    """Retrieval's MMR and thresholds, the Analyzer and the LLM judge, as a user writes them."""
    manifest = {"apiVersion": "kubevolve.io/v1alpha1", "kind": "EvolutionRun", "metadata": {"name": "r"}}
    spec = {
        "task": "t",
        "llm": {"endpoint": "http://llm:8000/v1"},
        "retrieval": {
            "cognitionTopK": 6,
            "cognitionMinScore": 0.3,
            "insightsMinScore": 0.1,
            "mmrLambda": 0.5,
        },
        "analyzer": {
            "mode": "llm",
            "model": "small",
            "endpoint": "http://small:8000/v1",
            "inputCostPerMtok": 0.1,
        },
        "llmJudge": {"enabled": True, "model": "judge", "neighbours": 4, "outputCostPerMtok": 0.4},
    }
    assert validate_manifest({**manifest, "spec": spec}, build_crd()) == []
    parsed = parse_spec({**manifest, "spec": spec})
    assert (
        parsed.retrieval.mmr_lambda == 0.5
        and parsed.analyzer_mode == "llm"
        and parsed.llm_judge.neighbours == 4
    )


def test_quantities_accept_strings_and_integers():
    limits = openapi_schema()["properties"]["spec"]["properties"]["jobs"]["properties"]["evaluate"]
    limits = limits["properties"]["resources"]["properties"]["limits"]
    assert validate({"memory": "8Gi", "nvidia.com/gpu": 2}, limits, "limits") == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid_runs(path):
    manifest = yaml.safe_load(path.read_text())
    assert validate_manifest(manifest, build_crd()) == []
    spec = parse_spec(manifest)  # the operator's own validation too
    task = REPO / spec.task  # a path in the image, relative to its task root: the repository's layout
    assert (task / "task.yaml").is_file(), f"{path.name}: no task at {spec.task}"
    assert read_task(task).error == ""


def test_every_task_has_an_example():
    tasks = {p.parent.name for p in (REPO / "tasks").glob("*/task.yaml")}
    named = {yaml.safe_load(p.read_text())["spec"]["task"].split("/")[-1] for p in EXAMPLES}
    assert tasks <= named
