"""RunSpec: the one configuration model of a run.

The same model is a local run's YAML file and, later, `EvolutionRun.spec` on Kubernetes (the CRD schema is
generated from it), so field names are camelCase, every field has a default or is required, and unknown
fields are errors. A YAML file may hold either the bare spec or a whole EvolutionRun manifest; `kubevolve run`
accepts both, so one file serves `kubectl apply` and a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kubevolve.core.quantity import NON_NEGATIVE_QUANTITY_PATTERN, QUANTITY_HINT, is_quantity, parse_quantity
from kubevolve.errors import KubevolveError

API_VERSION = "kubevolve.io/v1alpha1"
KIND = "EvolutionRun"


StageName = Literal["quick", "full"]  # the stages a task may define, in the order they run


class SpecError(KubevolveError, ValueError):
    """A run configuration is invalid; the message names every offending field."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, validate_assignment=True
    )


class FeatureAxis(_Model):
    """One axis of the MAP-Elites grid: a metric name (or `score`, `code_length`) binned over [min, max]."""

    name: str
    min: float
    max: float
    bins: Annotated[int, Field(ge=1, le=1000)] = 10

    @model_validator(mode="after")
    def _range(self) -> FeatureAxis:
        if self.max <= self.min:
            raise ValueError(f"feature {self.name!r}: max ({self.max}) must be greater than min ({self.min})")
        return self


class SamplerSpec(_Model):
    """How parents and inspirations are chosen from the database."""

    kind: Literal["ucb1", "greedy", "random", "map_elites"] = "ucb1"
    num_parents: Annotated[int, Field(ge=1, le=16)] = 1
    num_inspirations: Annotated[int, Field(ge=0, le=32)] = 2
    exploration: Annotated[float, Field(ge=0)] = 1.0  # UCB1's c
    islands: Annotated[int, Field(ge=1, le=64)] = 4  # MAP-Elites only
    migration_interval: Annotated[int, Field(ge=1)] = 20  # candidates between ring migrations
    archive_size: Annotated[int, Field(ge=1)] = 100  # elites kept for inspirations, per island
    features: list[FeatureAxis] | None = None  # None: the task's defaults


class BudgetSpec(_Model):
    """When a run stops. The first limit reached ends it; with none set it runs until interrupted."""

    max_llm_cost: Annotated[float, Field(gt=0)] | None = None  # USD; no new proposals once spent

    max_candidates: Annotated[int, Field(ge=1)] | None = 100
    deadline_seconds: Annotated[float, Field(gt=0)] | None = None
    target_score: float | None = None
    max_failures: Annotated[int, Field(ge=1)] | None = None  # consecutive failed candidates before giving up


class ParallelismSpec(_Model):
    """How many evaluation slots a run keeps busy, and how its proposals are made for them.

    `proposers` caps the proposals made at once (LLM calls, or proposal Jobs on Kubernetes); None (the
    default) leaves the count to the pacer (loop/pacing.py: about W x LLM latency / evaluation time, plus a
    small buffer), bounded by `llm.maxConcurrency`, the requests the endpoint is given at once anyway: more
    would only queue for it, and a proposal's wait in that queue would count as LLM latency, which makes the
    pacer propose still more. A fixed small cap (it was 2) starved the evaluators whenever W x latency /
    evaluation time exceeded it: W=8 slots with an LLM as slow as an evaluation need eight proposals under way.
    """

    evaluators: Annotated[int, Field(ge=1, le=1024)] = 2  # evaluation slots kept busy
    # proposals made at once; None: as many as the pacer wants, at most llm.maxConcurrency
    proposers: Annotated[int, Field(ge=1, le=1024)] | None = None
    # proposals in flight beyond the proposers; None: the pacer's bound (loop/pacing.py); 0: sequential
    # (reproducible, slow)
    proposals_ahead: Annotated[int, Field(ge=0, le=4096)] | None = None


class SecretKeyRef(_Model):
    """A key of a Secret. On Kubernetes it must live in the run's own namespace (the operator refuses others)."""

    name: str
    key: str = "api-key"
    namespace: str | None = None


class LLMModel(_Model):
    """One model of an ensemble, with its price (USD per million tokens) for cost accounting."""

    name: str
    endpoint: str | None = None  # default: llm.endpoint
    input_cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0


class LLMSpec(_Model):
    """The Researcher's and Analyzer's model. With no `endpoint`, the offline proposer (no LLM) is used."""

    endpoint: str | None = None  # an OpenAI-compatible base URL (vLLM, SGLang, Ollama, OpenAI)
    model: str = "gpt-4o-mini"
    input_cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0  # USD per million prompt tokens
    output_cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    models: list[LLMModel] | None = None  # an ensemble chosen by a cost-aware bandit; overrides `model`
    analyzer_model: str | None = None  # default: the Researcher's model (or the ensemble's cheapest)
    max_retries: Annotated[int, Field(ge=0, le=20)] = 4  # on 429, 5xx and timeouts, with backoff
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    edit_format: Literal["diff", "rewrite", "auto"] = "auto"  # what the Researcher is asked to return
    api_key_env: str = "OPENAI_API_KEY"  # locally: the variable holding the key (never stored)
    api_key_secret: SecretKeyRef | None = None  # on Kubernetes: a Secret in the run's namespace
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    max_tokens: Annotated[int, Field(ge=1)] = 4096
    timeout_seconds: Annotated[float, Field(gt=0)] = 120

    @property
    def configured(self) -> bool:
        """An endpoint is set (here or on a model of the ensemble): the LLM Researcher and Analyzer are used."""
        return bool(self.endpoint or any(m.endpoint for m in self.models or []))


class EngineerSpec(_Model):
    """The Engineer's filters and retries."""

    debug_retries: Annotated[int, Field(ge=0, le=10)] = 1  # a failed static/quick stage goes back to the LLM
    # Unused: the novelty filter compares canonical forms, not embeddings (loop/engineer/novelty.py). Kept so
    # that run files, manifests and the specs stored with earlier runs that set them still load.
    novelty_threshold: Annotated[float, Field(gt=0, le=1)] = 0.98
    novelty_window: Annotated[int, Field(ge=0)] = 64


class RetrievalSpec(_Model):
    """How much the Researcher is told: cognition entries and prior insights retrieved by similarity, one query
    per context node (the parent and each inspiration: its analysis, else its motivation) and one for a debug
    retry's failure, merged by maximal marginal relevance (loop/learn/retrieval.py)."""

    cognition_top_k: Annotated[int, Field(ge=0, le=50)] = 4
    cognition_min_score: Annotated[float, Field(ge=-1, le=1)] = 0.2  # cosine similarity an entry must reach
    insights_top_k: Annotated[int, Field(ge=0, le=50)] = 4
    insights_min_score: Annotated[float, Field(ge=-1, le=1)] = 0.0
    # 1: rank by relevance alone; lower: trade relevance for variety (an item like one already picked drops)
    mmr_lambda: Annotated[float, Field(ge=0, le=1)] = 0.7


class RoleLLMSpec(_Model):
    """A model for one side role (the Analyzer, the LLM judge); unset fields fall back on `llm`'s."""

    model: str | None = None  # default: the cheapest model of `llm` (or `llm.analyzerModel` for the Analyzer)
    endpoint: str | None = None  # default: that model's endpoint in `llm`, else `llm.endpoint`
    input_cost_per_mtok: Annotated[float, Field(ge=0)] | None = None  # default: the model's price in `llm`
    output_cost_per_mtok: Annotated[float, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2
    max_tokens: Annotated[int, Field(ge=1)] = 1024


class AnalyzerSpec(RoleLLMSpec):
    """Who analyses each experiment: `llm` (needs an endpoint here or in `llm`), `offline` (a factual summary,
    no LLM) or `off` (no analyses, no insights). None: `llm` when `llm` has an endpoint, else `offline`.
    Proposals rejected before evaluation always get the offline analysis (no LLM cost)."""

    mode: Literal["llm", "offline", "off"] | None = None


class LLMJudgeSpec(RoleLLMSpec):
    """An optional LLM judge that reads each proposal against its nearest neighbours and the task's rules
    before evaluation, and passes it or rejects it with a reason (its cost counts in `budget.maxLlmCost`)."""

    enabled: bool = False
    neighbours: Annotated[int, Field(ge=0, le=10)] = 3  # the most similar earlier candidates it is shown
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_tokens: Annotated[int, Field(ge=1)] = 512


# ---- Kubernetes only: how an EvolutionRun's Jobs are built (docs/kubernetes.md); a local run ignores these ----


def _quantity(value: Any) -> Any:
    if not is_quantity(value) or parse_quantity(value) < 0:
        raise ValueError(f"{value!r} is not a Kubernetes quantity: {QUANTITY_HINT}")
    return value


# a Kubernetes quantity: "500m", "8Gi", 2. The CRD gets the API server's grammar as a pattern, as
# controller-gen writes one for resource.Quantity.
Quantity = Annotated[
    str | int,
    BeforeValidator(_quantity),  # before: `true` must not become 1
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": NON_NEGATIVE_QUANTITY_PATTERN},
            ]
        }
    ),
]
# a Kubernetes object name (a DNS subdomain): a ServiceAccount, a Secret
ObjectName = Annotated[
    str,
    StringConstraints(
        max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ),
]


class ResourceRequirements(_Model):
    """Container resources, e.g. `{requests: {cpu: "2"}, limits: {memory: 8Gi}}`; merged over the defaults."""

    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"requests.{name} ({request}) is more than limits.{name} ({limit})")
        return self


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class JobOverrides(_Model):
    """Pod settings for one kind of Job; unset fields keep the operator's defaults."""

    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None  # None: derived from the task
    priority_class_name: str | None = None


class TrainJobSpec(_Model):
    """Emit each evaluation as a Kubeflow Trainer TrainJob (multi-node) instead of a batch Job."""

    # None: the run's own TrainingRuntime, which the operator makes (runtime/kubernetes/trainjob.py); a name:
    # the cluster admins' runtime, with MPI `launcher` and `node` Jobs running kubevolve's image
    runtime: str | None = None
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    num_nodes: Annotated[int, Field(ge=1, le=1024)] = 1
    num_proc_per_node: Annotated[int, Field(ge=1, le=64)] | None = None  # None: the GPUs per node


class EvaluationJobOverrides(JobOverrides):
    """Evaluation pods: GPUs (default: the task's largest stage; the task's evaluator starts one process per
    visible GPU with its launcher), and optionally a Kubeflow TrainJob instead of a Job."""

    gpus: Annotated[int, Field(ge=0, le=64)] | None = None  # per pod (per node for a TrainJob)
    gpu_resource: str = "nvidia.com/gpu"
    train_job: TrainJobSpec | None = None


class JobsSpec(_Model):
    propose: JobOverrides | None = None
    evaluate: EvaluationJobOverrides | None = None
    analyze: JobOverrides | None = None


class LocalObjectReference(_Model):
    """An object in the run's namespace, by name (as a pod's `imagePullSecrets` entries are)."""

    name: ObjectName


class StoreSpec(_Model):
    """Where the run's nodes live; None fields: the operator's default store."""

    url: str | None = None
    api_key_secret: SecretKeyRef | None = None


class FailurePolicySpec(_Model):
    """Retries of failed Jobs (a crashed pod, not a failed candidate) with exponential backoff."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3  # per Job: the first try and its retries
    backoff_seconds: Annotated[float, Field(ge=0)] = 10  # before the 2nd attempt; doubled for each next one
    max_backoff_seconds: Annotated[float, Field(ge=0)] = 600
    max_failed_jobs: Annotated[int, Field(ge=1)] | None = 10  # Jobs out of attempts before the run fails


class RunSpec(_Model):
    """Everything a run needs. `task` is a path to a task folder, relative to the YAML file that names it."""

    task: str
    name: str | None = None  # the run's id; defaults to "<task>-<random>"
    seed: int = 0
    sampler: SamplerSpec | None = None  # None: the task's sampler defaults
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec)
    llm: LLMSpec = Field(default_factory=LLMSpec)
    engineer: EngineerSpec = Field(default_factory=EngineerSpec)
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    analyzer: AnalyzerSpec = Field(default_factory=AnalyzerSpec)
    llm_judge: LLMJudgeSpec = Field(default_factory=LLMJudgeSpec)
    stages: list[StageName] | None = None  # None: every stage the task defines
    sandbox: Literal["auto", "bwrap", "none"] = "auto"  # "none": the pod is the sandbox (Kubernetes)
    # Kubernetes only (an EvolutionRun): image, Kueue queue, suspend, store, per-Job pod settings, retries.
    image: str | None = None  # None: the operator's default image (tasks are paths inside it)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    # registry Secrets (in the run's namespace) the step pods pull images with; None: the operator's default
    image_pull_secrets: list[LocalObjectReference] | None = None
    service_account_name: ObjectName | None = (
        None  # the step pods' ServiceAccount; None: the operator's default
    )
    queue_name: str | None = None  # a Kueue LocalQueue: label kueue.x-k8s.io/queue-name on every Job
    suspend: bool = False  # no new Jobs while true; running Jobs finish
    store: StoreSpec | None = None
    jobs: JobsSpec | None = None
    failure_policy: FailurePolicySpec | None = None

    @model_validator(mode="after")
    def _role_endpoints(self) -> RunSpec:
        if self.analyzer.mode == "llm" and not (self.analyzer.endpoint or self.llm.configured):
            raise ValueError("analyzer.mode is llm, but neither analyzer.endpoint nor llm.endpoint is set")
        if self.llm_judge.enabled and not (self.llm_judge.endpoint or self.llm.configured):
            raise ValueError("llmJudge is enabled, but neither llmJudge.endpoint nor llm.endpoint is set")
        return self

    @property
    def analyzer_mode(self) -> Literal["llm", "offline", "off"]:
        """`analyzer.mode`, its default resolved: the LLM Analyzer when an endpoint is configured."""
        if self.analyzer.mode is not None:
            return self.analyzer.mode
        return "llm" if self.llm.configured else "offline"

    @property
    def proposers_at_once(self) -> int:
        """`parallelism.proposers`, its default resolved: `llm.maxConcurrency` (ParallelismSpec says why)."""
        return self.parallelism.proposers or self.llm.max_concurrency

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def format_validation_error(err: ValidationError, prefix: str = "spec") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join([prefix, *(str(p) for p in e["loc"])])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}: {msg}")
    what = "run spec" if prefix == "spec" else prefix  # task.yaml's errors say "invalid task"
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def parse_run_spec(data: Any) -> RunSpec:
    """Validate a bare spec dict or an EvolutionRun manifest; raise SpecError naming the bad fields."""
    if not isinstance(data, dict):
        raise SpecError(f"a run spec must be a mapping, got {type(data).__name__}")
    if "kind" in data or "apiVersion" in data:
        if data.get("kind") != KIND:
            raise SpecError(f"kind: expected {KIND!r}, got {data.get('kind')!r}")
        if data.get("apiVersion") != API_VERSION:
            raise SpecError(f"apiVersion: expected {API_VERSION!r}, got {data.get('apiVersion')!r}")
        spec = dict(data.get("spec") or {})
        name = (data.get("metadata") or {}).get("name")
        if name and "name" not in spec:
            spec["name"] = name
        data = spec
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None


def load_run_spec(path: str | Path) -> RunSpec:
    """Load a run spec from YAML; a relative `task` path is resolved against the file's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    spec = parse_run_spec(data)
    task = Path(spec.task)
    if not task.is_absolute():
        spec.task = str((path.parent / task).resolve())
    return spec
