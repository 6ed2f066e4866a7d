"""RunSpec: one validated, serialisable configuration; bad fields are named."""

from __future__ import annotations

import pytest

from kubevolve.core.spec import API_VERSION, RunSpec, SpecError, load_run_spec, parse_run_spec


def test_defaults_round_trip_through_camel_case():
    spec = parse_run_spec({"task": "tasks/x", "budget": {"maxCandidates": 7, "targetScore": 2.6}})
    assert spec.budget.max_candidates == 7
    data = spec.to_dict()
    assert data["budget"] == {"maxCandidates": 7, "targetScore": 2.6}
    assert parse_run_spec(data) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": "x", "sampler": {"kind": "best"}}, "spec.sampler.kind: Input should be"),
        ({"task": "x", "sampler": {"numParnts": 2}}, "spec.sampler.numParnts: unknown field"),
        ({"task": "x", "budget": {"maxCandidates": 0}}, "spec.budget.maxCandidates: Input should be greater"),
        (
            {"task": "x", "parallelism": {"evaluators": "many"}},
            "spec.parallelism.evaluators: Input should be a valid",
        ),
        ({"sampler": {}}, "spec.task: Field required"),
        ({"task": "x", "colour": "red"}, "spec.colour: unknown field"),
        ([1, 2], "a run spec must be a mapping"),
        (
            {"task": "x", "sampler": {"features": [{"name": "a", "min": 1, "max": 0}]}},
            "max (0.0) must be greater",
        ),
    ],
)
def test_bad_fields_are_named(data, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_run_spec(data)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(SpecError) as err:
        parse_run_spec({"task": "x", "seed": "abc", "llm": {"temperature": 5}})
    assert "spec.seed" in str(err.value) and "spec.llm.temperature" in str(err.value)


def test_evolution_run_manifest_is_accepted(tmp_path):
    manifest = tmp_path / "run.yaml"
    manifest.write_text(
        f"apiVersion: {API_VERSION}\nkind: EvolutionRun\nmetadata: {{name: packing-1}}\n"
        "spec:\n  task: ../tasks/circle_packing\n  budget: {maxCandidates: 5}\n"
    )
    spec = load_run_spec(manifest)
    assert spec.name == "packing-1"
    assert spec.task == str((tmp_path.parent / "tasks" / "circle_packing").resolve())


def test_wrong_kind_and_version_are_refused():
    with pytest.raises(SpecError, match="kind: expected 'EvolutionRun'"):
        parse_run_spec({"apiVersion": API_VERSION, "kind": "Job", "spec": {"task": "x"}})
    with pytest.raises(SpecError, match="apiVersion: expected"):
        parse_run_spec({"apiVersion": "kubevolve.io/v9", "kind": "EvolutionRun", "spec": {"task": "x"}})


def test_invalid_yaml_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_run_spec(bad)


def test_spec_is_json_serialisable():
    import json

    spec = RunSpec(task="x")
    assert json.loads(json.dumps(spec.to_dict()))["task"] == "x"


@pytest.mark.parametrize(
    ("resources", "field", "message"),
    [
        (
            {"limits": {"memory": "8GB"}},
            "spec.jobs.evaluate.resources.limits.memory",
            "'8GB' is not a Kubernetes quantity",
        ),
        (
            {"requests": {"cpu": "1.5.5"}},
            "spec.jobs.evaluate.resources.requests.cpu",
            "not a Kubernetes quantity",
        ),
        (
            {"requests": {"cpu": "-1"}},
            "spec.jobs.evaluate.resources.requests.cpu",
            "not a Kubernetes quantity",
        ),
        (
            {"limits": {"cpu": True}},
            "spec.jobs.evaluate.resources.limits.cpu",
            "True is not a Kubernetes quantity",
        ),
        (
            {"requests": {"memory": "16Gi"}, "limits": {"memory": "8Gi"}},
            "spec.jobs.evaluate.resources",
            "requests.memory (16Gi) is more than limits.memory (8Gi)",
        ),
    ],
)
def test_resource_quantities_the_api_server_would_refuse_are_refused_here(resources, field, message):
    """Issue 14, defect 6: `8GB` used to pass, then every Job create of the run was a 422."""
    with pytest.raises(SpecError) as err:
        parse_run_spec({"task": "t", "jobs": {"evaluate": {"resources": resources}}})
    (line,) = [line for line in str(err.value).splitlines() if field in line]
    assert line.strip().startswith(field + ":") and message in line


@pytest.mark.parametrize("value", ["500m", "2", 2, "1.5", "8Gi", "512Mi", "10G", "1e3", "+4"])
def test_kubernetes_quantities_are_accepted_as_written(value):
    spec = parse_run_spec({"task": "t", "jobs": {"propose": {"resources": {"limits": {"cpu": value}}}}})
    assert spec.jobs.propose.resources.limits == {"cpu": value}


def test_the_step_pods_service_account_and_pull_secrets_are_object_names():
    spec = parse_run_spec(
        {"task": "t", "serviceAccountName": "steps", "imagePullSecrets": [{"name": "registry"}]}
    )
    assert spec.service_account_name == "steps" and spec.image_pull_secrets[0].name == "registry"
    for bad in (
        {"serviceAccountName": "Steps_1"},
        {"imagePullSecrets": [{"name": ""}]},
        {"imagePullSecrets": ["registry"]},
    ):
        with pytest.raises(SpecError):
            parse_run_spec({"task": "t", **bad})


def test_proposals_at_once_default_to_what_the_endpoint_takes_at_once():
    """No fixed cap of 2 by default: the pacer decides, bounded by llm.maxConcurrency (more would queue for
    the endpoint and count as LLM latency); a cap the spec sets is kept, above or below it."""
    spec = parse_run_spec({"task": "t", "parallelism": {"evaluators": 16}})
    assert spec.parallelism.proposers is None
    assert spec.proposers_at_once == spec.llm.max_concurrency == 8
    wide = parse_run_spec({"task": "t", "llm": {"maxConcurrency": 32}})
    assert wide.proposers_at_once == 32
    assert parse_run_spec({"task": "t", "parallelism": {"proposers": 3}}).proposers_at_once == 3
    assert parse_run_spec({"task": "t", "parallelism": {"proposers": 64}}).proposers_at_once == 64
    with pytest.raises(SpecError):
        parse_run_spec({"task": "t", "parallelism": {"proposers": 0}})
