"""Task folders are validated on load; each defect gets a message naming the file and the field."""

from __future__ import annotations

import pytest

from kubevolve.core.task import TaskError, load_task
from tests.kit.toy_task import TOY_PROGRAM, TOY_TASK_YAML, write_task


def test_toy_task_loads(toy_task):
    task = load_task(toy_task)
    assert task.name == "toy"
    assert task.stage_names == ["quick"]
    assert task.score_of({"f": -2.0}) == -2.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda root: (root / "task.yaml").unlink(), "no task.yaml"),
        (lambda root: (root / "task.yaml").write_text("name: [oops\n"), "not valid YAML"),
        (lambda root: (root / "task.yaml").write_text("- a list\n"), "must be a mapping"),
        (
            lambda root: (root / "task.yaml").write_text("name: t\ndescription: d\nstages: {quick: {}}\n"),
            "task.metric: Field required",
        ),
        (
            lambda root: (root / "task.yaml").write_text(TOY_TASK_YAML.format(timeout=5) + "colour: red\n"),
            "task.colour: unknown field",
        ),
        (
            lambda root: (root / "task.yaml").write_text(TOY_TASK_YAML.format(timeout=-1)),
            "task.stages.quick.timeoutSeconds: Input should be greater than 0",
        ),
        (
            lambda root: (root / "task.yaml").write_text(
                TOY_TASK_YAML.format(timeout=5).replace("quick:", "warmup:")
            ),
            "task.stages.warmup",
        ),
        (
            lambda root: (root / "task.yaml").write_text(
                TOY_TASK_YAML.format(timeout=5).replace(
                    "    timeoutSeconds: 5\n", "    timeoutSeconds: 5\n    network: tcp\n"
                )
            ),
            "invalid task:\n  task.stages.quick.network: Input should be 'isolated' or 'ranks'",
        ),
        (lambda root: (root / "initial.py").unlink(), "program 'initial.py' not found"),
        (lambda root: (root / "initial.py").write_text("def f(:\n"), "initial program does not parse"),
        (lambda root: (root / "initial.py").write_text("x = 1\n"), "no evolve block"),
        (
            lambda root: (root / "initial.py").write_text(TOY_PROGRAM.replace("# EVOLVE-BLOCK-END\n", "")),
            "EVOLVE-BLOCK-START is never closed",
        ),
        (lambda root: (root / "evaluate.py").unlink(), "evaluator 'evaluate.py' not found"),
        (
            lambda root: (root / "evaluate.py").write_text("def score(p):\n    return {}\n"),
            "must define a top-level function judge(candidate, stage)",
        ),
        (lambda root: (root / "run.py").unlink(), "runner 'run.py' not found"),
        (lambda root: (root / "run.py").write_text("def go(p, r):\n    return {}\n"), "function run(program"),
        (lambda root: (root / "run.py").write_text("def run(:\n"), "run.py: does not parse"),
        (
            lambda root: (
                (root / "task.yaml").write_text(
                    (root / "task.yaml").read_text().replace("runner: run.py", "")
                ),
                (root / "evaluate.py").write_text("def score(p):\n    return {}\n"),
            ),
            "must define a top-level function evaluate(program_path, stage)",
        ),
    ],
)
def test_malformed_task_gives_a_clear_error(tmp_path, mutate, message):
    root = write_task(tmp_path / "t")
    mutate(root)
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task(root)


def test_a_stage_is_isolated_unless_it_says_ranks(tmp_path):
    yaml_text = TOY_TASK_YAML.format(timeout=5)
    assert (
        load_task(write_task(tmp_path / "a", yaml_text=yaml_text)).spec.stages["quick"].network == "isolated"
    )
    ranks = yaml_text.replace("    timeoutSeconds: 5\n", "    timeoutSeconds: 5\n    network: ranks\n")
    assert load_task(write_task(tmp_path / "b", yaml_text=ranks)).spec.stages["quick"].network == "ranks"


def test_missing_folder(tmp_path):
    with pytest.raises(TaskError, match="not a task folder"):
        load_task(tmp_path / "nope")
