"""An LLM client over the OpenAI chat-completions protocol: any compatible endpoint (vLLM, SGLang, Ollama,
OpenAI) by base URL and model.

Retries with backoff on 429, 5xx, timeouts and connection errors are the `openai` SDK's own (it honours
Retry-After); this module adds a concurrency limit, token and cost accounting, and one clear error when a
request finally fails. The API key is read from an environment variable at start and never logged or stored.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import openai

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

from kubevolve.core.spec import LLMModel, LLMSpec, RoleLLMSpec, SpecError
from kubevolve.errors import KubevolveError


class LLMError(KubevolveError, RuntimeError):
    """A request failed for good (after the SDK's retries); the message says what the endpoint answered."""


@dataclass
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    messages: list[dict[str, str]] = field(default_factory=list)

    def record(self, purpose: str) -> dict[str, Any]:
        """The transcript entry stored with the node (`kubevolve show NODE --prompts`)."""
        return {
            "purpose": purpose,
            "model": self.model,
            "messages": self.messages,
            "completion": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "seconds": round(self.seconds, 3),
        }


def models_of(spec: LLMSpec) -> list[LLMModel]:
    """The models a run may use: the ensemble, or the single `model` with the spec's prices."""
    if spec.models:
        return list(spec.models)
    return [
        LLMModel(
            name=spec.model,
            input_cost_per_mtok=spec.input_cost_per_mtok,
            output_cost_per_mtok=spec.output_cost_per_mtok,
        )
    ]


def cheapest_model(spec: LLMSpec) -> str:
    """The name of the run's cheapest model (by the sum of its two prices): the side roles' default."""
    return min(models_of(spec), key=lambda m: m.input_cost_per_mtok + m.output_cost_per_mtok).name


def role_spec(llm: LLMSpec, role: RoleLLMSpec, default_model: str, what: str) -> LLMSpec:
    """The LLM settings of a side role (the Analyzer, the LLM judge): its own model, endpoint, prices,
    temperature and token limit, each falling back on the run's `llm` (a model of the ensemble lends its
    endpoint and prices). `what` names the role's RunSpec field in an error."""
    name = role.model or default_model
    known = next((m for m in models_of(llm) if m.name == name), None)
    endpoint = role.endpoint or (known.endpoint if known else None) or llm.endpoint
    if not endpoint:
        raise SpecError(f"{what}: model {name!r} has no endpoint: set {what}.endpoint or llm.endpoint")

    def price(own: float | None, inherited: float) -> float:
        return own if own is not None else inherited

    return llm.model_copy(
        update={
            "endpoint": endpoint,
            "model": name,
            "models": None,
            "input_cost_per_mtok": price(
                role.input_cost_per_mtok, known.input_cost_per_mtok if known else 0.0
            ),
            "output_cost_per_mtok": price(
                role.output_cost_per_mtok, known.output_cost_per_mtok if known else 0.0
            ),
            "temperature": role.temperature,
            "max_tokens": role.max_tokens,
        }
    )


class LLMClient:
    def __init__(self, spec: LLMSpec):
        if not spec.configured:
            raise ValueError("llm.endpoint is not set")
        self.spec = spec
        self.models = {m.name: m for m in models_of(spec)}
        # local servers (vLLM, Ollama) need no key; the SDK insists on a string
        api_key = os.environ.get(spec.api_key_env) or "no-key"
        self._clients: dict[str | None, openai.AsyncOpenAI] = {}  # None: the SDK's default base URL
        for model in self.models.values():
            base_url = model.endpoint or spec.endpoint
            if base_url not in self._clients:
                self._clients[base_url] = openai.AsyncOpenAI(
                    base_url=base_url,
                    api_key=api_key,
                    timeout=spec.timeout_seconds,
                    max_retries=spec.max_retries,
                )
        self._limit = asyncio.Semaphore(spec.max_concurrency)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        m = self.models.get(model)
        if m is None:
            return 0.0
        return (prompt_tokens * m.input_cost_per_mtok + completion_tokens * m.output_cost_per_mtok) / 1e6

    async def complete(
        self, messages: list[dict[str, str]], *, model: str | None = None, seed: int | None = None
    ) -> Completion:
        name = model or next(iter(self.models))
        base_url = self.models[name].endpoint or self.spec.endpoint
        client = self._clients[base_url]
        started = time.monotonic()
        async with self._limit:
            try:
                response = await client.chat.completions.create(
                    model=name,
                    messages=cast("list[ChatCompletionMessageParam]", messages),
                    temperature=self.spec.temperature,
                    max_tokens=self.spec.max_tokens,
                    seed=seed,
                )
            except openai.APITimeoutError:
                raise LLMError(
                    f"LLM request to {base_url} ({name}) timed out after {self.spec.timeout_seconds:g}s "
                    f"({self.spec.max_retries} retries)"
                ) from None
            except openai.APIStatusError as err:
                body = err.body.get("message") if isinstance(err.body, dict) else None
                raise LLMError(
                    f"LLM request to {base_url} ({name}) failed with HTTP {err.status_code} "
                    f"after {self.spec.max_retries} retries: {str(body or err.message)[:200]}"
                ) from None
            except openai.APIConnectionError as err:
                raise LLMError(f"cannot reach the LLM endpoint {base_url}: {err}") from None
        if not response.choices:
            raise LLMError(f"LLM endpoint {base_url} returned no choices")
        text = response.choices[0].message.content or ""
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        cost = self.cost(name, prompt_tokens, completion_tokens)
        return Completion(
            text=text,
            model=name,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            seconds=time.monotonic() - started,
            messages=messages,
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
