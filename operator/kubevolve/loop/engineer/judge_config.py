"""What the pool tells a slot's judge worker (judge.py): one JSON argument, built by sandbox.build_judge_launch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    """What the pool tells a judge worker (one JSON argument)."""

    evaluator: str
    task_root: str
    mode: str  # bwrap | none
    zygote_argv: list[str]
    zygote_env: dict[str, str]
    uid: int | None = None  # root only: the slot's own uid
    scratch_root: str | None = None  # sandbox "none": where per-candidate scratch folders go
    # the pod layout: the zygote connects here from the candidate's container (zygote_argv is then unused),
    # told to load `runner`; everything under `shared_root` is the candidate's to write and counts as its disk
    zygote_socket: str | None = None
    runner: str = ""
    shared_root: str | None = None
