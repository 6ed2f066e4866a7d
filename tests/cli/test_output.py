"""What the CLI prints is never cut: code, ids and long chains survive a pipe and a narrow terminal."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kubevolve import api
from kubevolve.cli import render
from kubevolve.cli.app import COMMAND_ORDER, app
from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.store.sqlite import SQLiteStore

runner = CliRunner()

# a line far wider than any terminal, with what rich would otherwise change: markup, an emoji code, tabs
LONG_LINE = "    table = [" + ", ".join(f"v{i}" for i in range(120)) + "]  # [bold]not markup[/] :smile:"
PROGRAM = (
    f"import math\n\n# EVOLVE-BLOCK-START\ndef solve():\n{LONG_LINE}\n\treturn 'a\\tb'\n# EVOLVE-BLOCK-END\n"
)


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    monkeypatch.setenv("KUBEVOLVE_STORE", str(path))
    return path


def _store_run(db, run_id: str = "r", nodes: int = 1) -> list[Node]:
    """A run whose nodes form one chain (each the child of the one before), the last one the best."""
    store = SQLiteStore(db)
    store.put_run(RunRecord(id=run_id, task="toy", spec={}))
    chain: list[Node] = []
    for i in range(nodes):
        node = Node(
            run_id=run_id,
            code=PROGRAM if i == nodes - 1 else f"x = {i}",
            stage=Stage.EVALUATED,
            score=float(i),
            generation=i,
            parent_ids=[chain[-1].id] if chain else [],
            motivation=f"step {i}: " + "a long reason " * 20,
            diff=f"--- a\n+++ b\n+{LONG_LINE}\n" if i else "",
        )
        chain.append(store.add_node(node))
    store.close()
    return chain


def test_best_and_show_print_the_program_verbatim_into_a_pipe(db):
    [node] = _store_run(db)
    for command in (["best"], ["show", node.id]):
        out = invoke(*command).stdout
        assert PROGRAM in out, command  # every character: the long line, the tab, the markup, the emoji code
    shown = invoke("show", node.id).stdout
    assert shown.count(LONG_LINE) == 1 and "[bold]not markup[/]" in shown


def _wrapped_tokens(text: str) -> list[str]:
    return re.findall(r"\bv\d+\b", text)


def test_a_long_line_on_a_narrow_terminal_is_wrapped_not_cut():
    node = Node(run_id="r", code=PROGRAM, diff=f"+{LONG_LINE}\n", stage=Stage.EVALUATED, score=1.0)
    console = Console(record=True, width=60, force_terminal=True)
    render.print_node(console, node)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 60
    expected = [f"v{i}" for i in range(120)]
    assert _wrapped_tokens(text) == expected * 2  # the diff, then the program: every token, in order
    assert "…" not in text


def test_runs_never_cuts_a_run_id(db):
    ids = [f"circle-packing-experiment-with-a-long-name-{i:02d}" for i in range(3)]
    for run_id in ids:
        _store_run(db, run_id)
    piped = invoke("runs").stdout
    assert all(run_id in piped for run_id in ids)
    rows = [line for line in piped.splitlines() if "circle-packing" in line]
    assert len(rows) == 3  # one line per run in a pipe: grep finds a run's whole row
    rows = [render.run_summary(r) for r in api.list_runs(store=str(db))]
    for width in (120, 60, 30):
        console = Console(record=True, width=width, force_terminal=True)
        render.print_runs(console, rows)
        text = console.export_text()
        assert all(run_id in text for run_id in ids), (width, text)
        assert "…" not in text.replace(" …", "")  # no cell is cut with an ellipsis


def test_lineage_of_a_long_chain_does_not_drift_right(db):
    chain = _store_run(db, nodes=60)
    piped = invoke("lineage", chain[-1].id).stdout
    rows = [line for line in piped.splitlines() if any(n.id in line for n in chain)]
    assert len(rows) == 60
    columns = {line.index(n.id) for line, n in zip(rows, chain, strict=True)}
    assert len(columns) == 1  # every id in the same column, the 60th as far left as the first
    console = Console(record=True, width=100, force_terminal=True)
    render.print_lineage(console, chain)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert all(n.id in text for n in chain)
    assert json.loads(invoke("lineage", chain[-1].id, "--json").stdout)[-1]["id"] == chain[-1].id


def test_help_lists_the_commands_in_the_order_a_user_meets_them():
    text = invoke("--help").stdout
    listed = re.findall(r"^│ (\w+) ", text, flags=re.MULTILINE)
    registered = set(app_commands())
    assert set(listed) == registered and len(listed) == len(registered)
    expected = [name for name in COMMAND_ORDER if name in registered]
    assert listed[: len(expected)] == expected
    assert listed.index("run") == 0 and listed.index("report") > listed.index("export")


def app_commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return list(group.commands)


def test_a_command_missing_from_the_order_is_listed_last_not_dropped():
    import click
    import typer.main

    group = typer.main.get_command(app)
    group.add_command(click.Command("zzz-new", help="A command nobody ordered."))
    assert group.list_commands(click.Context(group))[-1] == "zzz-new"


def test_untrusted_text_is_neither_markup_nor_a_terminal_escape():
    """Motivations, errors, logs and code come from an LLM or a candidate: `[/]` must not crash rich, and an
    escape sequence (here: retitle the window, clear the screen) must be shown on a terminal, not obeyed."""
    evil = "[/] [bold red]x[/] \x1b]0;pwned\x07 \x1b[2J :smile:"
    node = Node(
        run_id="r",
        code=f"# {evil}\nx = 1\n",
        motivation=evil,
        error=evil,
        stage=Stage.FAILED_QUICK,
        log_tail=evil,
        artifacts={"a": evil},
    )
    row = {
        "id": "r", "task": "t", "phase": "Failed", "dead": None, "best_score": None, "candidates": 1,
        "created_at": 0.0, "message": evil,
    }  # fmt: skip
    console = Console(record=True, width=100, force_terminal=True)
    render.print_node(console, node)
    render.print_lineage(console, [node])
    render.print_runs(console, [row])
    text = console.export_text(styles=False)
    assert "\x1b" not in text and "\x07" not in text
    assert text.count("\\x1b]0;pwned\\x07") >= 6 and "[bold red]x[/]" in text and ":smile:" in text


def test_into_a_pipe_the_program_keeps_even_its_control_characters(db):
    store = SQLiteStore(db)
    store.put_run(RunRecord(id="r", task="toy", spec={}))
    code = "x = '\x1b[0m'\n"
    store.add_node(Node(run_id="r", code=code, stage=Stage.EVALUATED, score=1.0))
    store.close()
    assert code in invoke("best").stdout  # verbatim: a redirect to a file gets the program as stored


def test_the_ui_answers_only_for_this_machines_names_on_every_bind_address():
    """DNS rebinding: a page elsewhere whose name resolves here must be refused, wildcard binds included."""
    import socket

    from kubevolve.cli.ui_cmd import answered_hosts

    for bind in ("127.0.0.1", "0.0.0.0", "::", "10.1.2.3"):
        allowed = answered_hosts(bind, None)
        assert allowed is not None and "evil.example" not in allowed
        assert {"localhost", "127.0.0.1", socket.gethostname()} <= set(allowed)
    assert "10.1.2.3" in answered_hosts("10.1.2.3", None)
    assert "lab.example" in answered_hosts("0.0.0.0", ["lab.example"])
    assert answered_hosts("0.0.0.0", ["*"]) is None  # only when asked: a proxy in front checks access
