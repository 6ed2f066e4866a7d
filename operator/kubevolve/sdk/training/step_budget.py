"""A fixed training budget: steps and, optionally, tokens; and how often to evaluate on the way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Training stops at `max_steps` optimizer steps or `max_tokens` training tokens, whichever comes first.

    `eval_every` > 0 evaluates every that many steps; the end of training is always evaluated.
    """

    max_steps: int
    max_tokens: int | None = None
    eval_every: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1 when set, got {self.max_tokens}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")

    def exhausted(self, steps: int, tokens: int) -> bool:
        return steps >= self.max_steps or (self.max_tokens is not None and tokens >= self.max_tokens)

    def should_eval(self, steps: int) -> bool:
        return self.eval_every > 0 and steps % self.eval_every == 0
