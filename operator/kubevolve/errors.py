"""The one exception every kubevolve error derives from.

`except KubevolveError` catches whatever kubevolve raises on purpose (a bad spec, a store failure, an LLM error,
a sandbox refusal) and nothing else. Each error keeps its older builtin base as well (`SpecError` is still a
`ValueError`, `StoreError` a `RuntimeError`), so existing `except` clauses keep their meaning.

This module imports nothing: every layer of the package, the sandboxed sdk included, may import it.
"""

from __future__ import annotations

__all__ = ["KubevolveError"]


class KubevolveError(Exception):
    """Base of every exception kubevolve defines."""
