"""Parsing Python source from several threads at once.

CPython 3.11 keeps the `ast` module's recursion-depth counter in state the whole interpreter shares, so two
threads turning source into AST objects at the same time can fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython#106905). The engine parses candidates on the event loop's thread
and on its worker threads (loop/offload.py: the static check, the novelty filter's canonical form), so every
parse in kubevolve goes through `parse`, which lets one thread at a time in. A parse takes about a millisecond.
"""

from __future__ import annotations

import ast
import threading

_ONE_AT_A_TIME = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, one thread at a time."""
    with _ONE_AT_A_TIME:
        return ast.parse(source, filename=filename)
