"""Helpers shared by the tests of the AI-for-AI task folders (tasks/linear_attention, tasks/rl_algorithm,
tasks/data_curation). Kept out of conftest.py so that other test sessions don't import the engine's steps."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import yaml

from kubevolve.core.models import Node, RunRecord
from kubevolve.core.spec import RunSpec
from kubevolve.loop.agents import make_agents
from kubevolve.loop.engineer.engineer import OneSlotEngineer
from kubevolve.loop.steps import evaluate_step, load_context, propose_step
from kubevolve.sdk.training.settings import merge
from kubevolve.store.sqlite import SQLiteStore


def load_module(path: Path, name: str) -> ModuleType:
    """A task file imported under `name`: the task folders are not packages, and their evaluators put their
    own helper modules (mqar, corpus, arithmetic...) in `sys.modules` as they load."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_quick_through_engine(task_dir: Path, tmp_path: Path, *, run_id: str, task: str) -> Node:
    """The task's initial program as the seed node of a run, evaluated by `evaluate_step`: a warm worker in
    the sandbox (bubblewrap where it works), the stage's resource limits, metric validation."""
    store = SQLiteStore(tmp_path / "store.db")
    try:
        spec = RunSpec(task=str(task_dir), name=run_id, stages=["quick"])
        store.put_run(RunRecord(id=run_id, task=task, spec=spec.to_dict()))
        ctx = load_context(store, run_id)
        asyncio.run(propose_step(ctx, make_agents(spec), node_id="seed"))
        return asyncio.run(evaluate_step(ctx, "seed", OneSlotEngineer(ctx.task, ctx.spec, tmp_path / "work")))
    finally:
        store.close()


def evaluate_through_engine(
    task_dir: Path, code: str, tmp_path: Path, stages: tuple[str, ...] = ("quick",)
) -> Node:
    """`code` evaluated as the engine evaluates a candidate (a one-slot pool, the default sandbox), without
    the static check: what the boundary alone does with it."""
    from kubevolve.core.task import load_task
    from kubevolve.loop.engineer.engineer import Engineer
    from kubevolve.loop.engineer.pool import EvaluatorPool

    task = load_task(task_dir)

    async def run() -> Node:
        pool = EvaluatorPool(task, 1, tmp_path / "work", stages=list(stages))
        await pool.start()
        try:
            engineer = Engineer(task, pool, list(stages))
            return await engineer.evaluate(Node(run_id="through-the-engine", code=code))
        finally:
            await pool.close()

    return asyncio.run(run())


def assert_cognition_sections_cite_sources(task_dir: Path) -> None:
    """Every section of the task's cognition files starts with a `## ` title and carries a `Source: ` line:
    a prior without a source cannot be checked or credited."""
    files = list((task_dir / "cognition").glob("*.md"))
    assert files, f"{task_dir}: no cognition files"
    for path in files:
        sections = path.read_text().split("\n## ")
        assert sections[0].startswith("## "), f"{path}: text before the first section"
        for section in sections:
            title, _, body = section.removeprefix("## ").partition("\n")
            assert title.strip() and "\nSource: " in "\n" + body, f"{path}: {title!r} has no Source: line"


def task_copy_with_settings(task_dir: Path, tmp_path: Path, stage: str, override: dict) -> Path:
    """A copy of a task folder whose training.yaml has `override` merged into `stage`: the same task at a
    size of the test's choosing (a few training steps), for runs through the engine, which reads the stage's
    settings from the folder."""
    copy = tmp_path / task_dir.name
    shutil.copytree(task_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "training.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["stages"][stage] = merge(settings["stages"].get(stage) or {}, override)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return copy
