"""The untrusted half of rl_algorithm's evaluation: runs in the candidate's sandboxed process, trains the
warm-started policy with the candidate's objective for one seed, and returns the policy's weights (after the
warm start, at every evaluation point, at the end) as arrays. The judge (evaluate.py) loads them into a policy
of its own and measures it on held-out problems only it knows; nothing this process says about how well the
policy solves counts.
"""

from __future__ import annotations

import rl_loop

from kubevolve.sdk.training import set_threads


def run(program, request: dict) -> dict:
    """`request`: {"seed": training seed, "settings": the stage's training settings}."""
    settings = request["settings"]
    set_threads(settings["threads"])
    return rl_loop.train_seed(program, settings, int(request["seed"]))
