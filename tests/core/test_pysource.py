"""Every parse of Python source in kubevolve goes through core.pysource, which lets one thread in at a time
(CPython 3.11's AST conversion shares its recursion counter between threads: python/cpython#106905)."""

from __future__ import annotations

import ast
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kubevolve.core import pysource
from tests.kit.paths import REPO


def test_parses_from_many_threads_are_one_at_a_time(monkeypatch):
    inside, most = 0, 0
    guard = threading.Lock()
    real = ast.parse

    def slow_parse(*args, **kwargs) -> ast.Module:  # ast.parse for everyone while patched, pytest included
        nonlocal inside, most
        if not threading.current_thread().name.startswith("parser"):
            return real(*args, **kwargs)
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # long enough for every other thread to arrive
        with guard:
            inside -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pysource.ast, "parse", slow_parse)
    sources = [f"x = {i}\ndef f(y):\n    return y + {i}\n" for i in range(16)]
    with ThreadPoolExecutor(8, thread_name_prefix="parser") as threads:
        trees = list(threads.map(pysource.parse, sources))
    assert most == 1
    assert [ast.dump(t) for t in trees] == [ast.dump(real(s)) for s in sources]


def test_kubevolve_parses_only_through_it():
    direct = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "operator" / "kubevolve").rglob("*.py"))
        if path.name != "pysource.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bast\.parse\(", line)
    ]
    assert direct == []
