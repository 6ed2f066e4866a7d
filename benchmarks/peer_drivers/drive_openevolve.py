"""Run OpenEvolve 0.4.0 on the peers.py workload, configured through its own Config: the benchmark's server as
its only model, W parallel evaluations (its worker processes, each of which makes one LLM call and then
evaluates), N iterations, diff-based evolution, no cascade. Runs with benchmarks/.peers/openevolve/bin/python.

    drive_openevolve.py URL SLOTS CANDIDATES INITIAL EVALUATOR OUTPUT
"""

import sys

from openevolve.api import run_evolution
from openevolve.config import Config, LLMModelConfig


def main() -> None:
    url, slots, candidates, initial, evaluator, output = sys.argv[1:7]
    config = Config()
    config.log_level = "WARNING"
    config.max_iterations = int(candidates)
    config.checkpoint_interval = 10**6  # no checkpoints inside the measured run
    config.diff_based_evolution = True
    config.llm.models = [LLMModelConfig(name="fixed-latency", api_base=url, api_key="none", weight=1.0)]
    config.llm.api_base = url
    config.llm.api_key = "none"
    config.llm.retries = 0
    config.llm.timeout = 120
    config.llm.update_model_params({"api_base": url, "api_key": "none", "retries": 0, "timeout": 120}, True)
    config.evaluator.parallel_evaluations = int(slots)
    config.evaluator.cascade_evaluation = False
    config.evaluator.max_retries = 0
    config.evaluator.timeout = 120
    config.database.in_memory = True
    run_evolution(initial, evaluator, config=config, output_dir=output, cleanup=False)


if __name__ == "__main__":
    main()
