"""Prompt templates: package files that a task may override with `<task>/prompts/<name>.md`.

Templates use `$name` placeholders (string.Template), so braces in code never need escaping.
"""

from __future__ import annotations

from importlib import resources
from string import Template

from kubevolve.core.task import Task
from kubevolve.errors import KubevolveError


class PromptError(KubevolveError, ValueError):
    pass


def load_template(name: str, task: Task | None = None) -> Template:
    """The task's override if it has one, else the packaged default."""
    if task is not None:
        override = task.root / "prompts" / f"{name}.md"
        if override.is_file():
            return Template(override.read_text())
    return Template(resources.files(__package__).joinpath(f"{name}.md").read_text())


def task_values(task: Task) -> dict[str, str]:
    """What every prompt about a task may name: $task_name, $task_description, $metric, $direction."""
    return {
        "task_name": task.name,
        "task_description": task.spec.description.strip(),
        "metric": task.spec.metric,
        "direction": task.spec.direction,
    }


def evolve_blocks(task: Task, code: str, limit: int) -> str:
    """The program's evolve blocks (the part a prompt is about), their last `limit` characters; the whole
    program when its markers are broken (a rejected candidate's may be)."""
    try:
        text = "\n# ...\n".join(task.split(code).blocks)
    except ValueError:
        text = code
    return text[-limit:].rstrip("\n")


def render(name: str, task: Task | None, **values: str) -> str:
    """Template `name` filled with `values`, and with the task's `task_values` when there is a task."""
    try:
        filled = {**task_values(task), **values} if task is not None else values
        return load_template(name, task).substitute(**filled).strip() + "\n"
    except KeyError as err:
        where = f"{task.root}/prompts/{name}.md" if task else f"prompt {name}"
        raise PromptError(f"{where}: unknown placeholder ${err.args[0]}") from None
    except ValueError as err:
        raise PromptError(f"prompt {name}: {err}") from None
