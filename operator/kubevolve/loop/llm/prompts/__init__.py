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


def render(name: str, task: Task | None, **values: str) -> str:
    try:
        return load_template(name, task).substitute(**values).strip() + "\n"
    except KeyError as err:
        where = f"{task.root}/prompts/{name}.md" if task else f"prompt {name}"
        raise PromptError(f"{where}: unknown placeholder ${err.args[0]}") from None
    except ValueError as err:
        raise PromptError(f"prompt {name}: {err}") from None
