"""Static checks: cheap reasons to reject a candidate before any process is started for it."""

from __future__ import annotations

import ast

from kubevolve.core import evolve_block
from kubevolve.core.task import Task


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


def static_check(task: Task, code: str, parent_code: str) -> str | None:
    """Return why `code` is rejected, or None if it passes."""
    checks = task.spec.checks
    if len(code.encode()) > checks.max_code_bytes:
        return f"program is {len(code.encode())} bytes, over the task's limit of {checks.max_code_bytes}"
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        return f"syntax error at line {err.lineno}: {err.msg}"
    markers = task.spec.evolve_block
    outside = evolve_block.changed_outside_blocks(parent_code, code, markers.start, markers.end)
    if outside:
        return outside
    for module in sorted(_imported_modules(tree)):
        for forbidden in checks.forbidden_imports:
            if module == forbidden or module.startswith(forbidden + "."):
                return f"imports {module!r}, which the task forbids"
    defined = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    defined |= {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    missing = [name for name in checks.required_names if name not in defined]
    if missing:
        return f"required top-level name(s) missing: {', '.join(missing)}"
    return None
