"""Static checks: cheap reasons to reject a candidate before any process is started for it."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kubevolve.core import evolve_block
from kubevolve.core.kinds import FailureKind
from kubevolve.core.task import Task


@dataclass(frozen=True)
class Rejection:
    """Why a check refused a candidate: the kind for machines, the message for people."""

    kind: FailureKind
    message: str


def _imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def static_check(task: Task, code: str, parent_code: str) -> Rejection | None:
    """Return why `code` is rejected, or None if it passes."""
    checks = task.spec.checks
    if len(code.encode()) > checks.max_code_bytes:
        return Rejection(
            FailureKind.PROGRAM_TOO_LARGE,
            f"program is {len(code.encode())} bytes, over the task's limit of {checks.max_code_bytes}",
        )
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        return Rejection(FailureKind.SYNTAX_ERROR, f"syntax error at line {err.lineno}: {err.msg}")
    markers = task.spec.evolve_block
    outside = evolve_block.changed_outside_blocks(parent_code, code, markers.start, markers.end)
    if outside:
        return Rejection(FailureKind.FROZEN_CODE_EDITED, outside)
    for module in sorted(_imported_modules(tree)):
        for forbidden in checks.forbidden_imports:
            if module == forbidden or module.startswith(forbidden + "."):
                return Rejection(FailureKind.FORBIDDEN_IMPORT, f"imports {module!r}, which the task forbids")
    defined = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    defined |= {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    missing = [name for name in checks.required_names if name not in defined]
    if missing:
        return Rejection(
            FailureKind.MISSING_NAME, f"required top-level name(s) missing: {', '.join(missing)}"
        )
    return None
