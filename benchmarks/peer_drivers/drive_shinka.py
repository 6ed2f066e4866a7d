"""Run ShinkaEvolve 0.0.7 on the peers.py workload, configured through its own configs: the benchmark's server
as its only model (`local/<model>@<url>`), diff patches only, no embeddings, meta recommendations, novelty
judge or text feedback (each would call other models), W evaluation jobs (local subprocesses running the
evaluator script with this interpreter), up to 2 W proposals with its controlled oversubscription on, N
generations after the initial program. Runs with benchmarks/.peers/shinka/bin/python.

ShinkaEvolve caps evaluation jobs at the machine's CPU count and proposal jobs at half of it, which on a 2-core
machine would run W=4 as 2 evaluations and 1 proposal at a time; the emulated evaluation sleeps rather than
computes, so the driver reports enough CPUs for W to stand (`os.cpu_count`, read by the runner's start-up).

    drive_shinka.py URL SLOTS CANDIDATES INITIAL EVALUATOR OUTPUT
"""

import os
import sys


def main() -> None:
    url, slots, candidates, initial, evaluator, output = sys.argv[1:7]
    workers = int(slots)
    cores = os.cpu_count() or 1
    os.cpu_count = lambda: max(cores, 4 * workers)

    from shinka.core import EvolutionConfig, ShinkaEvolveRunner
    from shinka.database import DatabaseConfig
    from shinka.launch import LocalJobConfig

    model = f"local/fixed-latency@{url}"
    evo = EvolutionConfig(
        patch_types=["diff"],
        patch_type_probs=[1.0],
        num_generations=int(candidates) + 1,  # generation 0 is the initial program
        llm_models=[model],
        llm_dynamic_selection=None,
        llm_kwargs={"temperatures": [0.0], "max_tokens": 1024},
        meta_rec_interval=None,
        embedding_model=None,
        init_program_path=initial,
        results_dir=output,
        use_text_feedback=False,
        enable_controlled_oversubscription=True,
    )
    job = LocalJobConfig(eval_program_path=evaluator, python_executable=sys.executable)
    db = DatabaseConfig(db_path=os.path.join(output, "evolution.sqlite"), num_islands=1)
    runner = ShinkaEvolveRunner(
        evo_config=evo,
        job_config=job,
        db_config=db,
        verbose=False,
        max_evaluation_jobs=workers,
        max_proposal_jobs=2 * workers,
    )
    runner.run()


if __name__ == "__main__":
    main()
