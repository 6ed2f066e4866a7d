"""The cost-aware bandit over an ensemble of models: improvement per dollar, with exploration."""

from __future__ import annotations

import pytest

from kubevolve.core.spec import LLMSpec
from kubevolve.loop.llm.client import LLMClient, models_of
from kubevolve.loop.llm.ensemble import CostAwareBandit


def test_every_model_is_tried_first():
    bandit = CostAwareBandit(["a", "b", "c"])
    seen = []
    for _ in range(3):
        choice = bandit.choose()
        seen.append(choice)
        bandit.update(choice, 0.0, 0.01)
    assert sorted(seen) == ["a", "b", "c"]


def test_cheap_model_with_equal_gains_wins_most_pulls():
    bandit = CostAwareBandit(["cheap", "dear"], exploration=0.3)
    pulls = {"cheap": 0, "dear": 0}
    for _ in range(200):
        model = bandit.choose()
        pulls[model] += 1
        bandit.update(model, improvement=0.1, cost_usd=0.001 if model == "cheap" else 0.05)
    assert pulls["cheap"] > 3 * pulls["dear"] > 0  # exploited, still explored


def test_expensive_model_that_improves_much_more_wins():
    bandit = CostAwareBandit(["weak", "strong"], exploration=0.3)
    pulls = {"weak": 0, "strong": 0}
    for _ in range(200):
        model = bandit.choose()
        pulls[model] += 1
        bandit.update(
            model, improvement=0.0 if model == "weak" else 1.0, cost_usd=0.01 if model == "weak" else 0.02
        )
    assert pulls["strong"] > pulls["weak"]


def test_costs_follow_the_prices():
    spec = LLMSpec(
        endpoint="http://127.0.0.1:9/v1",
        models=[{"name": "m", "inputCostPerMtok": 2.0, "outputCostPerMtok": 10.0}],
    )
    client = LLMClient(spec)
    assert client.cost("m", 1_000_000, 100_000) == pytest.approx(3.0)
    assert [m.name for m in models_of(spec)] == ["m"]
    assert [m.name for m in models_of(LLMSpec(model="solo"))] == ["solo"]
