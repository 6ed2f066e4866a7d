"""An evaluator that cannot be imported is the task author's to fix: the run says where, in a few lines."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kubevolve.cli.app import app
from tests.kit.toy_task import TOY_EVALUATOR, write_task

runner = CliRunner()

RAISES_AT_IMPORT = """\
import json


def helper():
    return 1 / 0


VALUE = helper()
"""


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_an_evaluator_that_raises_at_import_names_its_file_and_line(tmp_path):
    task = write_task(tmp_path / "bad", evaluator=RAISES_AT_IMPORT + TOY_EVALUATOR)
    evaluate_py = str(task.resolve() / "evaluate.py")
    result = invoke("run", str(task), "--max-candidates", "3")

    assert result.exit_code == 1
    error = result.stderr
    assert error.startswith("error: cannot import the evaluator: ZeroDivisionError: division by zero\n")
    assert f'File "{evaluate_py}", line 8, in <module>' in error and "VALUE = helper()" in error
    assert f'File "{evaluate_py}", line 5, in helper' in error and "return 1 / 0" in error
    assert len(error.strip().splitlines()) <= 10
    # none of kubevolve's own frames, nor importlib's, nor a Python traceback header
    for noise in ("Traceback", "kubevolve/", "importlib", "internal error", "EvaluatorUnavailable"):
        assert noise not in result.output, noise

    status = json.loads(invoke("status", "--json").stdout)
    assert status["phase"] == "Failed"
    assert status["message"] == error.strip().removeprefix("error: ")  # the run record says the same
    text = invoke("status").stdout
    assert "(node None)" not in text and "None" not in text
    assert "no candidate has a score yet" in text and "line 8" in text


def test_frames_in_the_tasks_helper_modules_are_shown_and_libraries_are_not(tmp_path):
    task = write_task(tmp_path / "lib", evaluator="import helpers\nimport json\n" + TOY_EVALUATOR)
    (task / "helpers.py").write_text("import json\n\nimport no_such_module_anywhere\n")
    result = invoke("run", str(task), "--max-candidates", "3")
    assert result.exit_code == 1
    error = result.stderr
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in error.splitlines()[0]
    assert f'File "{task.resolve() / "evaluate.py"}", line 1, in <module>' in error
    assert f'File "{task.resolve() / "helpers.py"}", line 3, in <module>' in error
    assert "importlib" not in error and "kubevolve/" not in error


def test_a_syntax_error_in_an_imported_module_points_at_the_line(tmp_path):
    task = write_task(tmp_path / "syn", evaluator="import helpers\n" + TOY_EVALUATOR)
    (task / "helpers.py").write_text("def broken(:\n    pass\n")
    result = invoke("run", str(task), "--max-candidates", "3")
    assert result.exit_code == 1
    first, *rest = result.stderr.strip().splitlines()
    assert "SyntaxError" in first
    assert (
        f'File "{task.resolve() / "helpers.py"}", line 1' in "\n".join(rest)
        and "def broken(:" in result.stderr
    )


def test_a_judge_or_runner_that_raises_at_import_names_its_file_and_line(tmp_path):
    """Judged tasks: the judge is imported by the judge process, the runner by the zygote in the sandbox; an
    import error in either reads like the evaluator's."""
    from tests.kit.toy_task import TOY_JUDGE, TOY_RUNNER

    judge = write_task(tmp_path / "judge")
    (judge / "evaluate.py").write_text(RAISES_AT_IMPORT + TOY_JUDGE)
    runner_task = write_task(tmp_path / "runner", runner=RAISES_AT_IMPORT + TOY_RUNNER)
    for task, file, what in ((judge, "evaluate.py", "the evaluator"), (runner_task, "run.py", "the runner")):
        result = invoke("run", str(task), "--max-candidates", "3")
        assert result.exit_code == 1
        error = result.stderr
        assert error.startswith(f"error: cannot import {what}: ZeroDivisionError: division by zero\n"), error
        assert f'File "{task.resolve() / file}", line 8, in <module>' in error
        assert "Traceback" not in error and "kubevolve/" not in error
