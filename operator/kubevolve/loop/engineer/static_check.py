"""Static checks: cheap reasons to reject a candidate before any process is started for it.

Defence in depth, never the boundary (that is the judge's process, see judge.py): a program can always reach a
module in ways no reading of its source can follow. What the check can see it refuses: imports of modules the
task forbids, and, when the task forbids any, the ways of importing by a name computed at run time
(`__import__(name)`, `importlib.import_module(name)`, the builtins or a function's globals by attribute).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kubevolve.core import evolve_block, pysource
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
        elif isinstance(node, ast.Call) and _last(node.func) in IMPORT_FUNCTIONS and (name := _literal(node)):
            names.add(name)
    return names


IMPORT_FUNCTIONS = {"__import__", "import_module"}  # called by any name that ends so (importlib as il, ...)
# attributes that lead to the import machinery or to every loaded module without naming one
# and frames, through which a function reaches the globals of whoever called it
ESCAPE_ATTRIBUTES = {"__builtins__", "__globals__", "__subclasses__", "__import__", "__loader__", "__spec__"}
ESCAPE_ATTRIBUTES |= {"f_globals", "f_locals", "f_builtins", "f_back", "tb_frame", "gi_frame", "cr_frame"}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a chain of names, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _last(node: ast.AST) -> str:
    """The called name's last part: `import_module` of `il.import_module`."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _literal(call: ast.Call) -> str | None:
    first = call.args[0] if call.args else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def computed_import(tree: ast.AST) -> str | None:
    """The first way of importing by a name computed at run time that the source shows, described."""
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Call):
            name = _dotted(node.func) or _last(node.func)
            if _last(node.func) in IMPORT_FUNCTIONS and _literal(node) is None:
                return f"{name}() with a computed module name (line {line})"
            if (
                name in ("getattr", "vars")
                and node.args
                and _dotted(node.args[0]) in ("builtins", "__builtins__")
            ):
                return f"{name}() on the builtins (line {line})"
        elif isinstance(node, ast.Name) and node.id == "__builtins__":
            return f"__builtins__ (line {line})"
        elif isinstance(node, ast.Attribute) and node.attr in ESCAPE_ATTRIBUTES:
            return f"the attribute {node.attr} (line {line})"
        elif (isinstance(node, ast.Import) and any(a.name == "builtins" for a in node.names)) or (
            isinstance(node, ast.ImportFrom) and node.module == "builtins"
        ):
            return f"the builtins module imported by name (line {line})"
    return None


def static_check(task: Task, code: str, parent_code: str) -> Rejection | None:
    """Return why `code` is rejected, or None if it passes."""
    checks = task.spec.checks
    if len(code.encode()) > checks.max_code_bytes:
        return Rejection(
            FailureKind.PROGRAM_TOO_LARGE,
            f"program is {len(code.encode())} bytes, over the task's limit of {checks.max_code_bytes}",
        )
    try:
        tree = pysource.parse(code)
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
    computed = computed_import(tree) if checks.forbidden_imports else None
    if computed:
        return Rejection(
            FailureKind.FORBIDDEN_IMPORT,
            f"imports, or reaches other code, through a name computed at run time ({computed}), which cannot "
            "be checked against the task's forbidden imports",
        )
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
