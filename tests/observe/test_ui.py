"""`kubevolve ui`, the live run browser: its JSON API over a real run (incremental polls, a node whole, the
tree, the charts), that it never writes to the store, and the page itself in headless Chromium following a run
while the test commits a new node to it. Screenshots go to test-artifacts/ui-run.png and ui-node.png."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kubevolve.cli.app import app as cli
from kubevolve.core import liveness
from kubevolve.core.models import CognitionEntry, Insight, Node, RunPhase, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.research.candidate import unified_diff
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.observe.ui import live
from kubevolve.observe.ui.app import create_app
from kubevolve.runtime.local import Evolution
from kubevolve.store import Store, open_store
from tests.kit.paths import REPO
from tests.kit.toy_task import write_task

# fails for small x, so the run has failures; reports x, a MAP-Elites feature
EVALUATOR = """\
import importlib.util


def evaluate(program_path, stage):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.solve()
    if x < 0.47:
        raise ValueError(f"x = {x} is too small")
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2, "x": x}
"""
RUN = "browse-me"
MARKUP = '<img src=x onerror="window.pwned = 1"><b>bold?</b>'  # a motivation that must stay text
READS = {
    "get_run",
    "list_runs",
    "get_node",
    "list_nodes",
    "iter_nodes",
    "count_nodes",
    "best_node",
    "list_insights",
    "list_cognition",
}


@pytest.fixture
def run_store(tmp_path: Path) -> Path:
    """A real run (two MAP-Elites islands over x and the program's length, some failures) in a SQLite file, left 'Running' as if its
    process were still going; returns the file."""
    task = write_task(tmp_path / "toy", evaluator=EVALUATOR)
    path = tmp_path / "store.db"
    spec = RunSpec(
        task=str(task),
        name=RUN,
        seed=5,
        sampler={
            "kind": "map_elites",
            "islands": 2,
            "migrationInterval": 8,
            "features": [
                {"name": "x", "min": 0.45, "max": 0.8, "bins": 7},
                {"name": "code_length", "min": 104, "max": 118, "bins": 7},
            ],
        },
        budget={"maxCandidates": 40},
    )
    store = open_store(str(path))
    try:
        asyncio.run(Evolution(spec, load_task(task), store, OfflineProposer(), tmp_path / "work").run())
        record = store.get_run(RUN)
        record.phase, record.message = RunPhase.RUNNING, "evolving"
        store.put_run(record)
    finally:
        store.close()
    return path


def researcher_child(store: Store, parent: Node) -> Node:
    """A candidate as the LLM Researcher leaves it: a diff, a transcript, what retrieval gave it, an insight.
    Its program is long (nothing may cut it) and its motivation holds markup (which must stay text)."""
    lesson = store.add_insight(Insight(run_id=RUN, text="LESSON-7: x near 3 pays off"))
    store.add_cognition(
        [
            CognitionEntry(
                collection="toy", title="PRIOR-Q: concave peaks", text="move to the vertex", source="calc"
            )
        ]
    )
    (prior,) = store.list_cognition("toy")
    filler = "".join(f"# line {i} of a long program\n" for i in range(1500))
    code = parent.code.replace("x = ", "x = 2.75  # ", 1) + filler + "# THE-LAST-LINE\n"
    node = Node(
        run_id=RUN,
        code=code,
        parent_ids=[parent.id],
        island=parent.island,
        generation=parent.generation + 1,
        motivation=f"try x = 2.75 {MARKUP}",
        diff=unified_diff(parent.code, code),
        proposer="llm:scripted-1",
        transcript=[
            {
                "purpose": "researcher",
                "model": "scripted-1",
                "messages": [
                    {"role": "system", "content": "You are the Researcher."},
                    {
                        "role": "user",
                        "content": "PROMPT-MARK: improve solve() </script><script>window.pwned=2",
                    },
                ],
                "completion": "COMPLETION-MARK: MOTIVATION: try x = 2.75",
                "prompt_tokens": 321,
                "completion_tokens": 54,
                "cost_usd": 0.0012,
                "seconds": 1.5,
            }
        ],
        retrieved={"insights": [lesson.id], "cognition": [prior.id]},
        timings={"propose": 1.5},
        llm={"prompt_tokens": 321.0, "completion_tokens": 54.0, "cost_usd": 0.0012},
    )
    return store.add_node(node)  # PROPOSED, as the Kubernetes runtime stores it before evaluating


def evaluate_child(store: Store, node: Node) -> Node:
    node.stage, node.metrics, node.score = Stage.EVALUATED, {"f": -0.0625 - 4.0, "x": 2.75}, -4.0625
    node.timings |= {"quick": 0.25}
    insight = store.add_insight(
        Insight(run_id=RUN, text="INSIGHT-OF-CHILD: 2.75 beat its parent", node_ids=[node.id])
    )
    node.insight_id = insight.id
    store.update_node(node)
    return node


@pytest.fixture
def no_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "REFRESH_S", 0.0)  # every poll reads the store (the tests do not wait a second)


class SpyStore:
    """A store that records every method called on it, and passes the call on."""

    def __init__(self, store: Store) -> None:
        self.store, self.calls = store, set()

    def __getattr__(self, name: str):
        value = getattr(self.store, name)
        if callable(value):
            self.calls.add(name)
        return value


class RecordingStore(SpyStore):
    """A SpyStore that also keeps the arguments of each `iter_nodes` call."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.reads: list[int] = []

    def iter_nodes(self, run_id: str, *, after_seq: int = -1):
        self.reads.append(after_seq)
        return self.store.iter_nodes(run_id, after_seq=after_seq)


# ---- following a run -----------------------------------------------------------------------------------
def test_a_follower_reads_only_what_is_new_at_most_once_a_second(run_store):
    writer = open_store(str(run_store))
    store = RecordingStore(open_store(str(run_store), read_only=True))
    now = [100.0]
    try:
        follower = live.RunFollower(store, RUN, clock=lambda: now[0])  # type: ignore[arg-type]
        for _ in range(5):  # five pages polling at once: one read
            follower.refresh()
        last = writer.list_nodes(RUN)[-1].seq
        assert store.reads == [-1] and len(follower.nodes) == last + 1 and follower.version == 1
        now[0] += live.REFRESH_S
        follower.refresh()
        assert store.reads == [-1, last] and follower.version == 1  # only after the newest; nothing changed
        child = researcher_child(writer, writer.best_node(RUN))  # PROPOSED
        now[0] += live.REFRESH_S
        follower.refresh()
        assert follower.nodes[child.id].stage is Stage.PROPOSED and follower.version == 2
        assert follower.nodes[child.id].transcript == []  # kept light: its page reads it whole
        now[0] += live.REFRESH_S
        follower.refresh()
        assert store.reads[-1] == child.seq - 1  # a PROPOSED node is read again until it is final
        evaluate_child(writer, child)
        now[0] += live.REFRESH_S
        follower.refresh()
        assert follower.nodes[child.id].stage is Stage.EVALUATED and follower.version == 3
        assert [n.id for n in follower.changed_since(2)] == [child.id]
        now[0] += live.REFRESH_S
        follower.refresh()
        assert store.reads[-1] == child.seq  # final now: not read again
    finally:
        writer.close()
        store.store.close()


# ---- the JSON API --------------------------------------------------------------------------------------
def test_the_api_follows_a_run_and_shows_a_node_whole(run_store, no_throttle):
    writer = open_store(str(run_store))
    reader = open_store(str(run_store), read_only=True)
    try:
        client = TestClient(create_app(reader, default_run=RUN))
        runs = client.get("/api/runs").json()
        assert runs["default"] == RUN and [r["id"] for r in runs["runs"]] == [RUN]
        assert runs["runs"][0]["phase"] == "Running" and runs["runs"][0]["max_candidates"] == 40

        first = client.get(f"/api/runs/{RUN}/poll").json()
        nodes = writer.list_nodes(RUN)
        assert [r["id"] for r in first["nodes"]] == [n.id for n in nodes]  # all of them, in seq order
        state = first["run"]
        assert state["candidates"] == 40 and state["budget"]["maxCandidates"] == 40
        assert state["sampler"] == "map_elites" and state["features"] == ["x", "code_length"]
        assert state["metric"] == "f"
        assert state["best"]["id"] == writer.best_node(RUN).id and state["phase"] == "Running"
        version = first["version"]
        assert client.get(f"/api/runs/{RUN}/poll?since={version}").json()["nodes"] == []  # nothing new

        best = writer.best_node(RUN)
        child = researcher_child(writer, best)
        new = client.get(f"/api/runs/{RUN}/poll?since={version}").json()
        assert [(r["id"], r["stage"]) for r in new["nodes"]] == [(child.id, "proposed")]
        assert new["run"]["candidates"] == 41
        evaluate_child(writer, child)  # the same node, evaluated: a PROPOSED node is read again
        later = client.get(f"/api/runs/{RUN}/poll?since={new['version']}").json()
        assert [(r["id"], r["stage"], r["score"]) for r in later["nodes"]] == [
            (child.id, "evaluated", -4.0625)
        ]

        page = client.get(f"/api/nodes/{child.id[:8]}").json()  # a prefix finds it
        node = page["node"]
        assert node["id"] == child.id and node["code"] == child.code  # the whole program, not cut
        assert node["code"].endswith("# THE-LAST-LINE\n") and len(node["code"]) > 40_000
        assert node["diff"] == child.diff and "\n+    x = 2.75  # " in node["diff"]
        assert node["transcript"][0]["completion"].startswith("COMPLETION-MARK")
        assert node["timings"] == {"propose": 1.5, "quick": 0.25} and "embedding" not in node
        assert page["insight"]["text"] == "INSIGHT-OF-CHILD: 2.75 beat its parent"
        retrieved = page["retrieved"]
        assert retrieved["recorded"] and [i["text"] for i in retrieved["insights"]] == [
            "LESSON-7: x near 3 pays off"
        ]
        assert [c["title"] for c in retrieved["cognition"]] == ["PRIOR-Q: concave peaks"]
        (analysis,) = retrieved["analyses"]  # the parent's own insight, which the Researcher was shown
        insights = {i.id: i.text for i in writer.list_insights(RUN)}
        assert analysis["id"] == best.id and analysis["relation"] == "parent"
        assert analysis["analysis"] == insights[writer.get_node(best.id).insight_id]
        assert [p["id"] for p in page["parents"]] == [best.id] and page["children"] == []
        parent_page = client.get(f"/api/nodes/{best.id}").json()
        assert child.id in [c["id"] for c in parent_page["children"]]
        offline = parent_page["retrieved"]  # an offline run retrieves nothing, and says it recorded nothing
        assert (offline["recorded"], offline["insights"], offline["cognition"]) == (False, [], [])

        tree = client.get(f"/api/runs/{RUN}/tree").json()
        every = writer.list_nodes(RUN)
        assert sorted(tree["id"]) == sorted(n.id for n in every) and tree["hidden"] == 0
        by_id = {n.id: n for n in every}
        for i, node_id in enumerate(tree["id"]):
            parent = tree["parent"][i]
            first_parent = by_id[node_id].parent_ids[:1]
            assert (tree["id"][parent] if parent >= 0 else None) == (
                first_parent[0] if first_parent else None
            )
            if parent >= 0:
                assert tree["x"][i] == tree["x"][parent] + 1  # one column per generation of first parents
        assert tree["best_path"][-1] == writer.best_node(RUN).id and tree["best_path"][0] == every[0].id
        assert len(set(tree["fill"])) > 3 and tree["rows"] >= 1

        charts = client.get(f"/api/runs/{RUN}/charts").json()
        assert charts["score"].count('class="node"') == len([n for n in every if n.stage is Stage.EVALUATED])
        assert charts["grid"].count('class="cell node"') >= 4 and charts["grid_note"] == ""
        assert f'data-id="{writer.best_node(RUN).id}"' in charts["grid"]  # the best holds its cell
        assert "outcome" in charts["outcomes"]
    finally:
        writer.close()
        reader.close()


def test_a_run_whose_process_is_gone_is_shown_dead(run_store, no_throttle):
    """Its record still says Running (kill -9 writes nothing): the ui judges the owner as the CLI does."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = open_store(str(run_store))
    try:
        client = TestClient(create_app(store, default_run=RUN))
        assert client.get("/api/runs").json()["runs"][0]["dead"] is None  # this test's process owns it
        record = store.get_run(RUN)
        record.owner = dataclasses.replace(liveness.this_process(), pid=gone.pid, process_started_at=None)
        store.put_run(record)
        row = client.get("/api/runs").json()["runs"][0]
        assert row["phase"] == "Running" and row["dead"] == f"process {gone.pid} is gone"
        assert client.get(f"/api/runs/{RUN}/poll").json()["run"]["dead"] == row["dead"]
    finally:
        store.close()


def test_the_browser_never_writes_to_the_store(run_store, no_throttle):
    before = hashlib.sha256(run_store.read_bytes()).hexdigest()  # the writer closed: the WAL is checkpointed
    spy = SpyStore(open_store(str(run_store), read_only=True))
    try:
        client = TestClient(create_app(spy))  # type: ignore[arg-type]
        nodes = client.get(f"/api/runs/{RUN}/poll").json()["nodes"]
        for path in ("/", "/api/runs", f"/api/runs/{RUN}/tree", f"/api/runs/{RUN}/charts", "/static/app.js"):
            assert client.get(path).status_code == 200, path
        for row in nodes[:5]:
            assert client.get(f"/api/nodes/{row['id']}").status_code == 200
        for path in ("/api/runs", f"/api/runs/{RUN}/poll", f"/api/nodes/{nodes[0]['id']}", "/"):
            for method in ("post", "put", "patch", "delete"):
                assert getattr(client, method)(path).status_code == 405, (method, path)
    finally:
        spy.store.close()
    assert spy.calls and spy.calls <= READS | {"close"}, spy.calls - READS
    assert hashlib.sha256(run_store.read_bytes()).hexdigest() == before


def test_errors_are_json_that_says_what_is_wrong(run_store, tmp_path, no_throttle):
    client = TestClient(create_app(open_store(str(run_store), read_only=True)))
    assert client.get("/api/runs/nope/poll").json() == {"error": "no run 'nope' in tenant 'default'"}
    assert client.get("/api/runs/nope/poll").status_code == 404
    assert client.get("/api/nodes/0000ffff").status_code == 404
    bad = client.get(f"/api/runs/{RUN}/poll?since=-1")
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    assert client.get("/").headers["content-security-policy"].startswith("default-src 'none'")


def test_a_loopback_server_answers_only_for_loopback_names(run_store):
    """A page elsewhere that rebinds its own name to 127.0.0.1 must not read the runs (DNS rebinding)."""
    app = create_app(open_store(str(run_store), read_only=True), allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://localhost:8765").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://evil.example:8765").get("/api/runs").status_code == 400


def test_a_store_that_cannot_be_read_yet_is_an_error_on_the_page_until_it_can(tmp_path, monkeypatch):
    monkeypatch.setattr("kubevolve.observe.ui.app.RETRY_OPEN_S", 0.0)
    path = tmp_path / "later.db"
    client = TestClient(create_app(lambda: open_store(str(path), tenant="lab", read_only=True)))
    answer = client.get("/api/runs")
    assert answer.status_code == 503 and "no store at" in answer.json()["error"]
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    assert not path.exists()  # trying to read it created nothing
    writer = open_store(str(path), tenant="other-lab")
    writer.put_run(_record("theirs"))
    assert "tenant 'lab' has nothing stored" in client.get("/api/runs").json()["error"]
    writer.close()
    writer = open_store(str(path), tenant="lab")
    writer.put_run(_record("ours"))
    writer.close()
    assert [r["id"] for r in client.get("/api/runs").json()["runs"]] == [
        "ours"
    ]  # the other lab's stays unseen


def _record(run_id: str):
    from kubevolve.core.models import RunRecord

    return RunRecord(id=run_id, task="t", spec={})


def test_the_cli_starts_without_the_web_framework():
    code = (
        "import sys, kubevolve.cli.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'anyio')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_kubevolve_ui_refuses_a_run_that_is_not_there(run_store):
    result = CliRunner().invoke(cli, ["ui", "nope", "--store", str(run_store)])
    assert result.exit_code == 2 and "no run 'nope'" in result.output


# ---- the page, in headless Chromium --------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "operator")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ui_server(run_store):
    """`kubevolve ui RUN` as a user starts it, in its own process, on a free port; yields its address."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubevolve", "ui", RUN, "--store", str(run_store), "--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


RUN_FACTS = """
(() => {
  const all = (sel) => Array.from(document.querySelectorAll(sel));
  return {
    version: document.documentElement.getAttribute('data-version'),
    charts: document.documentElement.getAttribute('data-charts'),
    crumb: document.getElementById('crumb').textContent,
    cards: all('#cards .card .k').map((k) => k.textContent),
    budget: document.getElementById('budget-text').textContent,
    latest: all('#latest tbody tr').map((tr) => tr.getAttribute('data-id')),
    scoreDots: all('#score svg circle.node').length,
    treeNodes: Number(document.getElementById('tree').getAttribute('data-nodes') || 0),
    treeHeight: document.getElementById('tree').getBoundingClientRect().height,
    gridCells: all('#grid svg rect.cell').length,
    outcomes: all('#outcomes svg rect.outcome').length,
    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
  };
})()
"""

NODE_FACTS = """
(() => {
  const panel = document.getElementById('node');
  const text = (id) => (document.getElementById(id) || {textContent: ''}).textContent;
  return {
    hidden: panel.hidden,
    title: text('node-title'),
    links: text('node-links'),
    body: text('node-body'),
    diffAdded: Array.from(panel.querySelectorAll('pre.diff .add')).map((s) => s.textContent),
    codeLines: panel.querySelectorAll('pre.numbered span').length,
    insight: text('node-insight'),
    retrieved: text('node-retrieved'),
    transcript: text('node-transcript'),
    images: document.querySelectorAll('img').length,
    pwned: window.pwned === undefined ? null : window.pwned,
    hash: location.hash,
  };
})()
"""


def test_the_page_follows_a_run_and_opens_a_node_committed_after_it_was_opened(
    run_store, ui_server, chromium
):
    tools = chromium
    for domain in ("Runtime", "Log", "Network", "Page"):
        tools.call(f"{domain}.enable")
    tools.call("Page.navigate", url=f"{ui_server}/")  # no run in the address: the command's RUN opens
    tools.wait_for("Page.loadEventFired")
    tools.wait_until("document.documentElement.getAttribute('data-charts')", what="the charts")
    facts = tools.evaluate(RUN_FACTS)
    writer = open_store(str(run_store))
    try:
        nodes = writer.list_nodes(RUN)
        evaluated = [n for n in nodes if n.stage is Stage.EVALUATED]
        assert len(evaluated) < len(nodes), "the run should have failures"
        assert facts["error"] == "" and facts["crumb"] == RUN
        assert facts["cards"][:3] == ["candidates", "evaluated", "best f"]
        assert facts["budget"].startswith("budget: 40 of 40 candidates")
        assert facts["latest"] == [n.id for n in reversed(nodes)][:15]
        assert facts["scoreDots"] == len(evaluated) and facts["treeNodes"] == len(nodes)
        assert facts["gridCells"] >= 4 and facts["outcomes"] >= 2 and facts["treeHeight"] > 400
        tools.screenshot("ui-run.png")

        # a candidate committed while the page is open shows up without a reload, then opens whole
        child = evaluate_child(writer, researcher_child(writer, writer.best_node(RUN)))
        tools.wait_until(
            f"!!document.querySelector('#latest tbody tr[data-id=\"{child.id}\"]')",
            what="the new node in the list",
        )
        tools.wait_until(f"document.getElementById('tree').getAttribute('data-nodes') === '{len(nodes) + 1}'")
        tools.evaluate(f"document.querySelector('#latest a[href$=\"/node/{child.id}\"]').click()")
        tools.wait_until(f"document.getElementById('node-title').textContent.includes('{child.id}')")
        node = tools.evaluate(NODE_FACTS)
        assert not node["hidden"] and node["hash"].endswith(f"/run/{RUN}/node/{child.id}")
        assert "parent: #" in node["links"] and "no children yet" in node["links"]
        assert any(line.startswith("+    x = 2.75") for line in node["diffAdded"])
        assert node["codeLines"] == len(child.code.splitlines())  # every line of the program
        assert "INSIGHT-OF-CHILD" in node["insight"]
        assert "LESSON-7" in node["retrieved"] and "PRIOR-Q: concave peaks" in node["retrieved"]
        assert "PROMPT-MARK" in node["transcript"] and "COMPLETION-MARK" in node["transcript"]
        assert MARKUP in node["body"] and node["images"] == 0 and node["pwned"] is None  # text, not markup
        tools.screenshot("ui-node.png", full_page=False)
        tools.evaluate("document.querySelector('#node-body pre.diff').scrollIntoView()")
        tools.screenshot("ui-node-diff.png", full_page=False)
        tools.evaluate("document.getElementById('node-transcript').scrollIntoView()")
        tools.screenshot("ui-node-transcript.png", full_page=False)

        # the node's parent link leads to the parent, whose children now include the new node
        best = child.parent_ids[0]
        tools.evaluate(f"document.querySelector('#node-links a[href$=\"/node/{best}\"]').click()")
        tools.wait_until(f"document.getElementById('node-title').textContent.includes('{best}')")
        assert child.id[:8] in tools.evaluate(NODE_FACTS)["links"]

        # search by id prefix
        tools.evaluate(
            "(() => { const i = document.getElementById('search-input'); i.focus();"
            f" i.value = '{child.id[:5]}'; i.dispatchEvent(new Event('input')); }})()"
        )
        hits = tools.evaluate(
            "Array.from(document.querySelectorAll('#search-results li[data-id]')).map((li) => li.getAttribute('data-id'))"
        )
        assert child.id in hits and all(h.startswith(child.id[:5]) for h in hits)

        # the run ends: the page says so
        record = writer.get_run(RUN)
        record.phase, record.message = RunPhase.SUCCEEDED, "budget reached: 41 candidates"
        writer.put_run(record)
        tools.wait_until("document.querySelector('#subtitle .phase').textContent === 'Succeeded'", timeout=30)
        assert (
            tools.evaluate("document.getElementById('message').textContent")
            == "budget reached: 41 candidates"
        )
    finally:
        writer.close()
    assert tools.problems() == []
    assert all(url.startswith(ui_server) for url in tools.requests()), (
        tools.requests()
    )  # nothing from outside
    assert (
        json.loads(urllib.request.urlopen(f"{ui_server}/api/runs").read())["runs"][0]["phase"] == "Succeeded"
    )
