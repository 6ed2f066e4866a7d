"""Choosing a model from an ensemble: UCB1 whose reward is score improvement per dollar.

A model earns by the improvement its proposal made over its parent, divided by what the proposal cost. Rewards
are normalised by the largest seen so far, so the exploration bonus keeps its meaning whatever the units. The
state is a function of the committed nodes (model, cost, improvement), so a resumed run rebuilds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_COST = 1e-6  # a free (self-hosted) model still divides by something


@dataclass
class _Arm:
    pulls: int = 0
    reward: float = 0.0  # sum of raw rewards (improvement per dollar)


class CostAwareBandit:
    def __init__(self, models: list[str], exploration: float = 1.0):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.arms = {name: _Arm() for name in models}
        self.exploration = exploration
        self._best_reward = 0.0

    def choose(self) -> str:
        for name, arm in self.arms.items():
            if arm.pulls == 0:
                return name
        total = sum(arm.pulls for arm in self.arms.values())
        scale = self._best_reward or 1.0

        def ucb(item: tuple[str, _Arm]) -> float:
            arm = item[1]
            return arm.reward / arm.pulls / scale + self.exploration * math.sqrt(math.log(total) / arm.pulls)

        return max(self.arms.items(), key=ucb)[0]

    def update(self, model: str, improvement: float, cost_usd: float) -> None:
        arm = self.arms.get(model)
        if arm is None:
            return
        reward = max(0.0, improvement) / max(cost_usd, MIN_COST)
        arm.pulls += 1
        arm.reward += reward
        self._best_reward = max(self._best_reward, reward)
