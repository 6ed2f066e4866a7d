"""Every exception kubevolve defines derives from `KubevolveError` and keeps the builtin base callers catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubevolve.errors import KubevolveError
from tests.kit.paths import REPO

# Imports every module of the package (but `__main__`, which runs the CLI) and lists the exception classes
# defined there. It runs in a child process: importing the operator's handlers registers them with kopf, and
# the sdk pulls in torch; neither should leak into the test session.
WALK = """
import importlib, inspect, json, pkgutil, sys
import kubevolve
from kubevolve.errors import KubevolveError
found = {}
for info in pkgutil.walk_packages(kubevolve.__path__, "kubevolve."):
    if info.name == "kubevolve.__main__":
        continue
    module = importlib.import_module(info.name)
    for obj in vars(module).values():
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
            found[f"{obj.__module__}.{obj.__qualname__}"] = {
                "kubevolve": issubclass(obj, KubevolveError),
                "mro": [c.__name__ for c in obj.__mro__],
            }
json.dump(found, sys.stdout)
"""

# the builtin each error had before KubevolveError, which `except` clauses in and around kubevolve rely on
BUILTIN_BASES = {
    "kubevolve.cli.lab_cmd.LabError": "ValueError",
    "kubevolve.core.evolve_block.BlockError": "ValueError",
    "kubevolve.core.spec.SpecError": "ValueError",
    "kubevolve.core.task.TaskError": "ValueError",
    "kubevolve.loop.engineer.metric_check.MetricsError": "ValueError",
    "kubevolve.loop.engineer.pool.EvaluatorUnavailable": "RuntimeError",
    "kubevolve.loop.engineer.sandbox.SandboxError": "RuntimeError",
    "kubevolve.loop.learn.cognition.CognitionError": "ValueError",
    "kubevolve.loop.learn.embeddings.EmbeddingError": "RuntimeError",
    "kubevolve.loop.llm.client.LLMError": "RuntimeError",
    "kubevolve.loop.llm.prompts.PromptError": "ValueError",
    "kubevolve.loop.research.edit_format.EditError": "RuntimeError",
    "kubevolve.loop.research.proposal.ProposalError": "RuntimeError",
    "kubevolve.loop.steps.StepError": "RuntimeError",
    "kubevolve.observe.ui.app.BadRequest": "Exception",
    "kubevolve.sdk.training.loop.TrainingDiverged": "RuntimeError",
    "kubevolve.sdk.training.settings.SettingsError": "ValueError",
    "kubevolve.store.base.NotFound": "RuntimeError",
    "kubevolve.store.base.StoreError": "RuntimeError",
    "kubevolve.testing.ApiError": "Exception",
    "kubevolve.testing.pods.spec.PodError": "Exception",
    "kubevolve.testing.trainer.TrainJobRefused": "ValueError",
}


@pytest.fixture(scope="module")
def exception_classes() -> dict[str, dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", WALK], capture_output=True, text=True, env=env, cwd=REPO, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_exception_class_derives_from_kubevolve_error(exception_classes: dict[str, dict]) -> None:
    assert set(BUILTIN_BASES) <= set(exception_classes), "the walk missed modules it should have imported"
    strays = sorted(name for name, info in exception_classes.items() if not info["kubevolve"])
    assert not strays, f"derive these from kubevolve.errors.KubevolveError: {strays}"


def test_each_error_keeps_the_builtin_base_callers_catch(exception_classes: dict[str, dict]) -> None:
    lost = {name: base for name, base in BUILTIN_BASES.items() if base not in exception_classes[name]["mro"]}
    assert not lost, f"these errors no longer derive from the builtin callers catch: {lost}"


def test_kubevolve_error_catches_only_kubevolve_errors() -> None:
    from kubevolve.core.spec import SpecError

    with pytest.raises(KubevolveError):
        raise SpecError("bad field")
    with pytest.raises(ValueError):
        raise SpecError("bad field")
    assert not issubclass(ValueError, KubevolveError)
