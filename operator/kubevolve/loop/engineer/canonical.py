"""The canonical form of a program: what is left of it once formatting, comments, docstrings and the names of
local variables are set aside. Two programs with the same canonical form are the same experiment.

The program is parsed (formatting and comments go), every bare string statement is dropped (docstrings and
string "comments"), and each function's local variables are renamed in the order they first appear, so
`total = 0; for item in xs: total += item` and `acc = 0; for x in xs: acc += x` read alike. What can change
what a program does is never renamed: module-level names (the program's interface to its evaluator), class
attributes, parameters (a caller may pass them by keyword), imported names, the names of nested functions
and classes, names declared `global`, and every name of a function that calls `locals`, `vars`, `eval` or
`exec` (they can read a name as text). Constants are compared as values: `0.5`, `.5` and `5e-1` are one
constant, while `1` and `1.0` are two.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from kubevolve.core import pysource

VERSION = "c1"  # part of every hash: a later canonical form must not be compared with this one
NAME_READERS = frozenset({"locals", "vars", "eval", "exec"})
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_LEAVES = (
    ast.Constant,
    ast.expr_context,
    ast.operator,
    ast.boolop,
    ast.unaryop,
    ast.cmpop,
)  # nothing to rename
_STATEMENT_LISTS = ("body", "orelse", "finalbody")


def canonical_hash(code: str) -> str:
    """`VERSION:` and a hash of the canonical form; "" when the program does not parse."""
    try:
        tree = pysource.parse(code)
        _drop_string_statements(tree)
        _Renamer().rename(tree)
        dump = ast.dump(tree, annotate_fields=False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # the static check rejects such programs
        return ""
    return f"{VERSION}:{hashlib.sha256(dump.encode()).hexdigest()[:32]}"


def _drop_string_statements(tree: ast.AST) -> None:
    """Remove every statement that is a bare string (docstrings included); an emptied body becomes `pass`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.kind = None  # u"x" and "x" are one string
            continue
        for name in _STATEMENT_LISTS:
            value = getattr(node, name, None)
            if not isinstance(value, list) or not value or not isinstance(value[0], ast.stmt):
                continue
            kept = [s for s in value if not _is_string_statement(s)]
            if len(kept) != len(value):
                setattr(node, name, kept or ([ast.Pass()] if name == "body" else []))


def _is_string_statement(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


@dataclass
class _Scope:
    kind: str  # module | function | class | comprehension
    parent: _Scope | None
    renamable: set[str] = field(default_factory=set)  # plain local variables
    fixed: set[str] = field(default_factory=set)  # bound here but kept: parameters, imports, defs
    declared: set[str] = field(default_factory=set)  # global or nonlocal: bound elsewhere
    reads_names: bool = False  # calls locals/vars/eval/exec

    def binds(self, name: str) -> bool:
        return name not in self.declared and (name in self.renamable or name in self.fixed)

    def renames(self, name: str) -> bool:
        return (
            self.kind in ("function", "comprehension")
            and not self.reads_names
            and name in self.renamable
            and name not in self.fixed
            and name not in self.declared
        )


class _Renamer:
    """Two passes over the tree with the same scoping: collect what each scope binds, then rename."""

    def __init__(self) -> None:
        self.scopes: dict[int, _Scope] = {}
        self.names: dict[tuple[int, str], str] = {}  # (scope, old name) -> new name

    def rename(self, tree: ast.Module) -> None:
        module = _Scope("module", None)
        self._collect(tree, module)
        self._rewrite(tree, module)

    # ---- the tree, each node with the scope it belongs to ------------------------------------------------
    def _scope(self, node: ast.AST, kind: str, parent: _Scope) -> _Scope:
        scope = self.scopes.get(id(node))
        if scope is None:
            scope = self.scopes[id(node)] = _Scope(kind, parent)
            if isinstance(node, _FUNCTIONS):
                args = node.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                scope.fixed.update(a.arg for a in params if a is not None)
        return scope

    def _children(self, node: ast.AST, scope: _Scope) -> Iterator[tuple[ast.AST, _Scope]]:
        if isinstance(node, _FUNCTIONS):
            args = node.args
            outer: list[ast.AST | None] = [*args.defaults, *args.kw_defaults]
            if not isinstance(node, ast.Lambda):
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                outer += [*node.decorator_list, node.returns, *(a.annotation for a in params if a)]
            yield from ((n, scope) for n in outer if n is not None)
            inner = self._scope(node, "function", scope)
            body = [node.body] if isinstance(node, ast.Lambda) else node.body
            yield from ((n, inner) for n in body)
        elif isinstance(node, ast.ClassDef):
            yield from ((n, scope) for n in [*node.decorator_list, *node.bases, *node.keywords])
            inner = self._scope(node, "class", scope)
            yield from ((n, inner) for n in node.body)
        elif isinstance(node, _COMPREHENSIONS):
            inner = self._scope(node, "comprehension", scope)
            for index, generator in enumerate(node.generators):
                yield generator.target, inner
                yield generator.iter, (scope if index == 0 else inner)  # the first iterable: outside
                yield from ((n, inner) for n in generator.ifs)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            yield from ((n, inner) for n in parts)
        else:
            yield from ((n, scope) for n in ast.iter_child_nodes(node) if not isinstance(n, _LEAVES))

    # ---- pass 1: what each scope binds -------------------------------------------------------------------
    def _collect(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store | ast.Del):
                scope.renamable.add(node.id)
            elif node.id in NAME_READERS:
                reader: _Scope | None = scope
                while reader is not None:  # a name read as text may be any enclosing function's
                    reader.reads_names = True
                    reader = reader.parent
            return
        if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            owner = scope
            while owner.kind == "comprehension" and owner.parent is not None:  # := binds outside it
                owner = owner.parent
            owner.renamable.add(node.target.id)
            self._collect(node.value, scope)
            return
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope.fixed.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            scope.fixed.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            scope.declared.update(node.names)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            scope.renamable.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            scope.renamable.add(node.rest)
        for child, child_scope in self._children(node, scope):
            self._collect(child, child_scope)

    # ---- pass 2: the new names -----------------------------------------------------------------------------
    def _new_name(self, scope: _Scope, name: str) -> str:
        """The name `name` means in `scope`: renamed if it resolves to a renamable local, else unchanged."""
        current: _Scope | None = scope
        while current is not None:
            nested = current is not scope
            if current.kind == "class" and nested:  # class bodies are not visible from nested scopes
                current = current.parent
                continue
            if current.binds(name):
                if not current.renames(name):
                    return name
                key = (id(current), name)
                if key not in self.names:
                    self.names[key] = f"%{len(self.names)}"  # not an identifier: clashes with no real name
                return self.names[key]
            current = current.parent
        return name

    def _rewrite(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Name):
            node.id = self._new_name(scope, node.id)
            return
        if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            node.name = self._new_name(scope, node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            node.rest = self._new_name(scope, node.rest)
        elif isinstance(node, ast.Nonlocal) and scope.parent is not None:
            node.names = [self._new_name(scope.parent, n) for n in node.names]
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            node.target.id = self._new_name(scope, node.target.id)
            self._rewrite(node.value, scope)
            return
        for child, child_scope in self._children(node, scope):
            self._rewrite(child, child_scope)
