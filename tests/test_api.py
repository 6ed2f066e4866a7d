"""The Python API: the README's example runs as written, runs resume as on the command line, the store is
read with the CLI's rules, and `import kubevolve` does not import the engine."""

from __future__ import annotations

import _thread
import asyncio
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kubevolve
from kubevolve.cli.app import app
from kubevolve.core.models import Node, RunPhase
from kubevolve.loop.engineer import sandbox
from kubevolve.observe.progress import RunProgress
from tests.kit.paths import REPO


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "README.md should hold exactly one python example"
    return blocks[0]


def test_the_readme_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the example names tasks/circle_packing relative to the checkout
    namespace: dict[str, object] = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    result, named = namespace["result"], namespace["named"]
    assert isinstance(result, kubevolve.RunResult) and isinstance(named, kubevolve.RunResult)
    assert result.phase is RunPhase.SUCCEEDED and result.candidates == 24 and not result.resumed
    assert result.best is not None and "def run_packing" in result.best.code
    assert result.best_score is not None and result.best_score > 2.0  # a valid packing of 26 circles
    assert named.id == "packing-api" and named.candidates == 8
    assert [r.id for r in kubevolve.list_runs()] == [
        "packing-api",
        result.id,
    ]  # the default store, newest first


def test_an_interrupted_run_is_resumed_unless_new(toy_task: Path) -> None:
    async def interrupted() -> None:
        task = asyncio.current_task()
        assert task is not None

        def stop_after_three(progress: RunProgress, node: Node | None) -> None:
            if progress.candidates >= 3:
                task.cancel()

        await kubevolve.evolve_async(toy_task, max_candidates=10, on_progress=stop_after_three)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())
    (stopped,) = kubevolve.list_runs()
    assert stopped.phase is RunPhase.STOPPED and 3 <= stopped.candidates < 10

    resumed = kubevolve.evolve(toy_task, max_candidates=10)
    assert resumed.resumed and resumed.id == stopped.id
    assert resumed.phase is RunPhase.SUCCEEDED and resumed.candidates == 10
    nodes = kubevolve.list_nodes(resumed.id)
    assert [n.seq for n in nodes] == list(range(10))  # nothing committed was lost or evaluated twice
    evaluated = [n.code_hash for n in nodes if n.stage is kubevolve.Stage.EVALUATED]
    assert len(set(evaluated)) == len(evaluated)

    fresh = kubevolve.evolve(toy_task, max_candidates=3, new=True)
    assert not fresh.resumed and fresh.id != stopped.id and fresh.candidates == 3
    again = kubevolve.evolve(toy_task, max_candidates=3)  # only unfinished runs are resumed
    assert not again.resumed and again.id not in (stopped.id, fresh.id)


def test_a_named_spec_resumes_and_stays_the_callers(toy_task: Path) -> None:
    spec = kubevolve.RunSpec(task=str(toy_task), name="api-run", budget={"maxCandidates": 4})
    first = kubevolve.evolve(spec)
    assert first.id == "api-run" and first.candidates == 4 and not first.resumed
    more = kubevolve.evolve(spec, max_candidates=7)  # a raised budget continues the same run
    assert more.resumed and more.id == "api-run" and more.candidates == 7
    assert spec.budget.max_candidates == 4 and spec.name == "api-run"  # overrides went to a copy
    with pytest.raises(kubevolve.SpecError, match="already exists"):
        kubevolve.evolve(spec, new=True)


def test_a_relative_task_in_a_spec_is_the_folder_it_names_then(
    toy_task: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(toy_task.parent)
    first = kubevolve.evolve(kubevolve.RunSpec(task=toy_task.name), max_candidates=2)
    assert first.run.spec["task"] == str(toy_task.resolve())
    store = kubevolve.open_store()
    store.put_run(replace(first.run, phase=RunPhase.STOPPED))  # as if interrupted
    store.close()
    monkeypatch.chdir(tmp_path)  # the same folder, named from elsewhere, resumes that run
    again = kubevolve.evolve(toy_task, max_candidates=3)
    assert again.resumed and again.id == first.id and again.candidates == 3


def test_readers_agree_with_the_cli(toy_task: Path) -> None:
    result = kubevolve.evolve(toy_task, max_candidates=6)
    cli = CliRunner()
    best = json.loads(cli.invoke(app, ["best", "--json"]).stdout)
    assert result.best is not None and best["id"] == result.best.id
    assert getattr(kubevolve.best_node(), "id", None) == result.best.id
    status = json.loads(cli.invoke(app, ["status", "--json"]).stdout)
    assert status["candidates"] == kubevolve.run_status().candidates == 6
    assert [n.seq for n in kubevolve.list_nodes(result.id)] == list(range(6))
    evaluated = kubevolve.list_nodes(stages=[kubevolve.Stage.EVALUATED])
    assert evaluated and all(n.stage is kubevolve.Stage.EVALUATED for n in evaluated)


def test_store_urls_and_tenants_follow_the_cli_rules(
    toy_task: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = kubevolve.evolve(toy_task, max_candidates=3, store=url, tenant="lab-a")
    assert kubevolve.list_runs(store=url) == []  # another tenant sees nothing
    assert [r.id for r in kubevolve.list_runs(store=url, tenant="lab-a")] == [lab.id]
    assert kubevolve.list_runs() == []  # nor does the default store

    monkeypatch.setenv("KUBEVOLVE_STORE", url)
    monkeypatch.setenv("KUBEVOLVE_TENANT", "lab-a")
    assert lab.best is not None and getattr(kubevolve.best_node(), "id", None) == lab.best.id
    store = kubevolve.open_store()
    assert store.tenant == "lab-a" and kubevolve.run_status(lab.id, store=store).id == lab.id
    store.close()


def test_evolve_blocks_inside_a_running_event_loop(toy_task: Path) -> None:
    """As in a Jupyter cell, where asyncio.run would refuse to start."""

    async def cell() -> kubevolve.RunResult:
        return kubevolve.evolve(toy_task, max_candidates=3)

    result = asyncio.run(cell())
    assert result.phase is RunPhase.SUCCEEDED and result.candidates == 3


def test_an_interrupt_in_a_notebook_stops_the_run_so_that_it_resumes(toy_task: Path) -> None:
    """A kernel interrupt reaches the cell's thread; the evolution's own thread stops and records it."""

    def interrupt_after_two(progress: RunProgress, node: Node | None) -> None:
        if progress.candidates == 2 and node is not None:  # once: stopping reports progress again
            _thread.interrupt_main()

    async def cell() -> kubevolve.RunResult:
        return kubevolve.evolve(toy_task, max_candidates=50, on_progress=interrupt_after_two)

    loop = asyncio.new_event_loop()  # like ipykernel's, it leaves SIGINT to Python (asyncio.run would not)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    (stopped,) = kubevolve.list_runs()
    assert stopped.phase is RunPhase.STOPPED and stopped.candidates < 50
    assert kubevolve.evolve(toy_task, max_candidates=4).id == stopped.id


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: kubevolve.evolve("/nonexistent/task"),
            kubevolve.SpecError,
            "no such task folder or run file",
        ),
        (lambda: kubevolve.best_node(), kubevolve.NotFound, "no runs yet"),
        (lambda: kubevolve.run_status("no-such-run"), kubevolve.NotFound, "no run 'no-such-run'"),
        (lambda: kubevolve.open_store("ftp://x"), kubevolve.StoreError, "unsupported store URL"),
    ],
)
def test_bad_input_gets_a_clear_error(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_a_bad_sandbox_mode_is_named(toy_task: Path) -> None:
    with pytest.raises(ValueError, match="sandbox 'docker': expected one of auto, bwrap, none"):
        kubevolve.evolve(toy_task, sandbox="docker")
    assert kubevolve.list_runs() == []  # refused before a run was recorded


def test_without_bubblewrap_the_api_warns_as_the_cli_does(
    toy_task: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    with pytest.warns(RuntimeWarning, match="bubblewrap is not available here"):
        result = kubevolve.evolve(toy_task, max_candidates=2)
    assert result.phase is RunPhase.SUCCEEDED
    cli = CliRunner().invoke(app, ["run", str(toy_task), "--max-candidates", "2", "--json"])
    assert cli.exit_code == 0 and "bubblewrap is not available here" in cli.stderr


def test_every_exported_name_resolves() -> None:
    for name in kubevolve.__all__:
        assert getattr(kubevolve, name) is not None, name
    assert sorted(kubevolve.__all__) == dir(kubevolve)
    with pytest.raises(AttributeError, match="no attribute 'evolvee'"):
        kubevolve.evolvee  # noqa: B018


HEAVY = ("kubevolve.runtime", "kubevolve.loop", "kubevolve.store", "openai", "torch", "typer")


@pytest.mark.parametrize(
    ("statement", "heavy"),
    [
        ("import kubevolve", HEAVY),
        ("import kubevolve.sdk.evaluator_kit", HEAVY),
        ("import kubevolve; kubevolve.RunSpec", HEAVY),  # the spec model alone
        (
            "import kubevolve; kubevolve.open_store",
            ("kubevolve.runtime", "kubevolve.loop", "openai", "torch"),
        ),
    ],
)
def test_importing_the_package_does_not_import_the_engine(statement: str, heavy: tuple[str, ...]) -> None:
    """Task code imports kubevolve.sdk inside the sandbox, once per evaluation slot: it must stay cheap."""
    probe = textwrap.dedent(f"""
        import json, sys
        {statement}
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = [m for m in json.loads(out) if m.split(".")[0] in {h.split(".")[0] for h in heavy}]
    offending = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)]
    assert offending == [], f"{statement!r} imported {offending}"
