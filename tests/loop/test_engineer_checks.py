"""The Engineer's cheap checks: the metric contract and the static checks, before any process starts."""

from __future__ import annotations

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.metric_check import MetricsError, validate_metrics
from kubevolve.loop.engineer.static_check import static_check


def test_valid_metrics_and_artifacts():
    metrics, artifacts = validate_metrics({"f": 1, "g": 2.5, "artifacts": {"log": "x" * 10_000}}, "f")
    assert metrics == {"f": 1.0, "g": 2.5}
    assert len(artifacts["log"]) == 8000  # truncated, not refused


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([1.0], "must return a dict of metrics, got list"),
        ({"f": float("nan")}, "metric 'f' is not finite"),
        ({"f": float("inf")}, "metric 'f' is not finite"),
        ({"f": 1.0, "ok": True}, "metric 'ok' must be a number, got bool"),
        ({"f": "2.5"}, "metric 'f' must be a number, got str"),
        ({"g": 1.0}, "the primary metric 'f' is missing (got ['g'])"),
        ({}, "the primary metric 'f' is missing (got no metrics)"),
        ({"f": 1.0, "artifacts": "text"}, "'artifacts' must be a dict"),
        ({1: 1.0, "f": 1.0}, "metric names must be strings"),
    ],
)
def test_bad_metrics_are_named(result, message):
    with pytest.raises(MetricsError) as err:
        validate_metrics(result, "f")
    assert message in str(err.value)


@pytest.fixture
def task(toy_task):
    return load_task(toy_task)


def with_block(body: str) -> str:
    return f"import math\n\n# EVOLVE-BLOCK-START\n{body}\n# EVOLVE-BLOCK-END\n"


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (with_block("def solve(:\n    pass"), "syntax error at line 4", FailureKind.SYNTAX_ERROR),
        (
            with_block("def solve():\n    import socket.x\n    return 1, 2"),
            "imports 'socket.x', which the task forbids",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    s = __import__('socket')\n    return 1, 2"),
            "imports 'socket'",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    from socket import create_connection\n    return 1, 2"),
            "imports 'socket'",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block(
                "def solve():\n    import importlib\n    importlib.import_module('socket')\n    return 1, 2"
            ),
            "imports 'socket'",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    name = 'sock' + 'et'\n    __import__(name)\n    return 1, 2"),
            "__import__() with a computed module name (line 6)",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    import importlib as il\n    il.import_module(n)\n    return 1, 2"),
            "computed at run time",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    import builtins\n    return 1, 2"),
            "the builtins module imported by name",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    f = getattr(__builtins__, '__imp' + 'ort__')\n    return 1, 2"),
            "computed at run time",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    g = solve.__globals__\n    return 1, 2"),
            "the attribute __globals__ (line 5)",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def solve():\n    c = ().__class__.__base__.__subclasses__()\n    return 1, 2"),
            "the attribute __subclasses__",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        (
            with_block("def other():\n    return 1, 2"),
            "required top-level name(s) missing: solve",
            FailureKind.MISSING_NAME,
        ),
        (
            "import os\n" + with_block("def solve():\n    return 1, 2"),
            "code changed outside the evolve blocks",
            FailureKind.FROZEN_CODE_EDITED,
        ),
        (
            with_block("def solve():\n    return 1, 2") + "# EVOLVE-BLOCK-END\n",
            "evolve-block markers broken",
            FailureKind.FROZEN_CODE_EDITED,
        ),
        (
            with_block("def solve():\n    return 1, 2\n" + "# padding\n" * 30_000),
            "over the task's limit",
            FailureKind.PROGRAM_TOO_LARGE,
        ),
    ],
)
def test_static_check_rejections(task, code, message, kind):
    rejection = static_check(task, code, task.initial_code)
    assert rejection is not None and message in rejection.message
    assert rejection.kind is kind


def test_computed_imports_pass_where_the_task_forbids_nothing(task):
    """The computed-import rule guards the forbidden list; with none, there is nothing for it to guard."""
    task.spec.checks.forbidden_imports = []
    code = with_block("def solve():\n    m = __import__('ma' + 'th')\n    return m.pi, 2")
    assert static_check(task, code, task.initial_code) is None


def test_static_check_accepts_a_change_inside_the_block(task):
    code = task.initial_code.replace("x = 0.5", "x = 2.9")
    assert static_check(task, code, task.initial_code) is None
