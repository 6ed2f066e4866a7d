"""Every FailureKind, produced by a real failing candidate or proposal and read back from the store.

Each row of the table is a candidate program, an LLM answer or a proposer that fails one way; it goes through
the code that fails it for real (the Engineer and its sandboxed pool, `propose_step` with the Researcher
against a local OpenAI-protocol server, the local runtime) and the test asserts the kind the stored node
carries. No row names a message: a change of wording cannot change a kind. The evaluation rows share one
pool (two slots) and run concurrently; the whole module takes a few seconds plus the longest timeout.

Two kinds are produced elsewhere, where their machinery is: UNKNOWN by the store migration
(tests/store/test_failure_migration.py) and JOB_FAILED by the operator (tests/runtime/kubernetes/
test_operator.py::test_failing_evaluation_is_retried_then_recorded_failed).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import OfflineAnalyzer
from kubevolve.loop.engineer.engineer import Engineer, precheck
from kubevolve.loop.engineer.llm_judge import LLMJudge
from kubevolve.loop.engineer.pool import EvaluatorPool
from kubevolve.loop.engineer.sandbox import bwrap_works
from kubevolve.loop.llm.client import LLMClient
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.proposal import Proposal
from kubevolve.loop.research.researcher import Researcher
from kubevolve.loop.steps import load_context, propose_step
from kubevolve.runtime.local import Evolution
from kubevolve.store.sqlite import SQLiteStore
from tests.kit.openai_server import OpenAIServer, Reply
from tests.kit.toy_task import TOY_EVALUATOR, TOY_PROGRAM, write_task

TIMEOUT = 4  # seconds: the quick stage's wall clock, long enough for a CPU-bound row to use its 1 s of CPU
TASK_YAML = """\
name: toy
description: Maximise f(x, y) = -(x - 3)^2 - (y + 1)^2.
metric: f
stages:
  quick:
    timeoutSeconds: {timeout}
    resources: {{memoryMb: 256, maxProcesses: 16, maxFileMb: 4, maxDiskMb: 16}}
    rejectBelow: {{f: -1000}}
checks:
  forbiddenImports: [socket]
  requiredNames: [solve]
"""
# an evaluator that breaks what the worker's child calls first to isolate itself, as a locked-down host can
SETSID_REFUSED = TOY_EVALUATOR + textwrap.dedent("""
    import os


    def _refused():
        raise PermissionError("setsid is not permitted here")


    os.setsid = _refused
""")
NO_LITERALS = "X = 0.5\n\n# EVOLVE-BLOCK-START\ndef solve():\n    return X, X\n# EVOLVE-BLOCK-END\n"


def program(body: str) -> str:
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return f"import math\n\n# EVOLVE-BLOCK-START\ndef solve():\n{body}\n# EVOLVE-BLOCK-END\n"


@dataclass(frozen=True)
class Case:
    kind: FailureKind
    how: str  # engineer | broken_sandbox | llm | offline | judge | novelty | in_flight
    code: str = ""  # the candidate, for the Engineer; the answer, for the LLM
    bwrap: bool = False  # needs the namespaces: as root without them nothing stops the program


CASES = {
    # the static checks, then the duplicate check against the store (engineer.precheck)
    "too large": Case(
        FailureKind.PROGRAM_TOO_LARGE, "engineer", program("return 1.0, 1.0\n" + "# padding\n" * 30_000)
    ),
    "syntax error": Case(FailureKind.SYNTAX_ERROR, "engineer", program("return (1.0,")),
    "frozen code": Case(
        FailureKind.FROZEN_CODE_EDITED, "engineer", "import os\n" + program("return 1.0, 1.0")
    ),
    "broken markers": Case(
        FailureKind.FROZEN_CODE_EDITED, "engineer", program("return 1.0, 1.0") + "# EVOLVE-BLOCK-END\n"
    ),
    "forbidden import": Case(
        FailureKind.FORBIDDEN_IMPORT, "engineer", program("import socket\nreturn 1.0, 1.0")
    ),
    "missing name": Case(
        FailureKind.MISSING_NAME, "engineer", TOY_PROGRAM.replace("def solve():", "def solved():")
    ),
    "duplicate": Case(FailureKind.DUPLICATE, "engineer", TOY_PROGRAM),
    # evaluation in the sandboxed pool
    "timeout": Case(FailureKind.TIMEOUT, "engineer", program("import time\ntime.sleep(60)")),
    "cpu limit": Case(
        FailureKind.CPU_LIMIT,
        "engineer",
        program("""
            import resource
            resource.setrlimit(resource.RLIMIT_CPU, (1, resource.getrlimit(resource.RLIMIT_CPU)[1]))
            while True:
                pass
        """),
    ),
    "memory": Case(
        FailureKind.MEMORY_LIMIT, "engineer", program("block = bytearray(1 << 30)\nreturn 1.0, 1.0")
    ),
    "forks": Case(
        FailureKind.PROCESS_LIMIT,
        "engineer",
        program("""
            import os, time
            for _ in range(200):
                if os.fork() == 0:
                    time.sleep(30)
            return 1.0, 1.0
        """),
        bwrap=True,
    ),
    "big file": Case(
        FailureKind.FILE_LIMIT, "engineer", program("open('big.bin', 'wb').write(b'x' * (8 << 20))")
    ),
    "big file, SIGXFSZ": Case(
        FailureKind.FILE_LIMIT,
        "engineer",
        program("""
            import signal
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            open('big.bin', 'wb').write(b'x' * (8 << 20))
        """),
    ),
    "writes outside": Case(
        FailureKind.WROTE_OUTSIDE,
        "engineer",
        program("open('/opt/kubevolve-escape', 'w').write('x')"),
        bwrap=True,
    ),
    "network": Case(
        FailureKind.NETWORK,
        "engineer",
        program("import urllib.request\nurllib.request.urlopen('http://192.0.2.1/', timeout=2)"),
        bwrap=True,
    ),
    "fills its scratch": Case(
        FailureKind.DISK_QUOTA,
        "engineer",
        program("""
            for i in range(100):
                open(f'part-{i}', 'wb').write(b'x' * (1 << 20))
        """),
    ),
    "garbles its reply": Case(  # a frame on its reply channel (fd 4) declaring a terabyte
        FailureKind.PROTOCOL_VIOLATION,
        "engineer",
        program("import os\nos.write(4, (1 << 40).to_bytes(8, 'little'))\nreturn 1.0, 1.0"),
    ),
    "raises": Case(FailureKind.RAISED, "engineer", program("raise RuntimeError('kaput')")),
    "exits": Case(FailureKind.CRASHED, "engineer", program("import os\nos._exit(3)")),
    "segfaults": Case(FailureKind.CRASHED, "engineer", program("import ctypes\nctypes.string_at(0)")),
    "nan": Case(FailureKind.BAD_METRICS, "engineer", program("return float('nan'), 0.0")),
    "below threshold": Case(FailureKind.EARLY_REJECTION, "engineer", program("return 100.0, 0.0")),
    "sandbox setup": Case(FailureKind.SANDBOX_FAILED, "broken_sandbox", program("return 1.0, 1.0")),
    # proposals, through propose_step
    "llm down": Case(FailureKind.LLM_ERROR, "llm"),
    "malformed answer": Case(FailureKind.MALFORMED_ANSWER, "llm", "I would make x a bit larger."),
    "nothing to change": Case(FailureKind.PROPOSAL_FAILED, "offline"),
    "judged unoriginal": Case(
        FailureKind.LLM_JUDGE_REJECTED, "judge", "VERDICT: REJECT\nREASON: the same idea as Neighbour 1."
    ),
    "near duplicate": Case(FailureKind.NEAR_DUPLICATE, "novelty"),
    # the local runtime: the same program proposed while its twin is still being evaluated
    "duplicate in flight": Case(
        FailureKind.DUPLICATE, "in_flight", program("import time\ntime.sleep(1.5)\nreturn 2.0, -1.0")
    ),
}
ELSEWHERE = {FailureKind.UNKNOWN, FailureKind.JOB_FAILED}


class Rewritten:
    """Proposes one experiment again and again, each time written differently (spacing, comments, names)."""

    name = "rewritten"
    versions = (
        program("x = 2.0\ny = -1.0\nreturn x, y"),
        program("# the same point, spelled out\npx = 2.0  # x\npy = -1.\nreturn (px, py)"),
    )

    def __init__(self) -> None:
        self.calls = 0

    async def propose(self, request) -> Proposal:
        self.calls += 1
        code = self.versions[(self.calls - 1) % len(self.versions)]
        return Proposal(code=code, motivation="the same experiment", proposer=self.name)


class Twice:
    """Proposes one program twice (a proposer that repeats itself, as an LLM at low temperature does)."""

    name = "twice"

    def __init__(self, code: str):
        self.code = code

    async def propose(self, request) -> Proposal:
        return Proposal(code=self.code, motivation="the same again", proposer=self.name)


@dataclass
class Outcomes:
    store: SQLiteStore
    nodes: dict[str, Node]


async def _checked_and_evaluated(
    engineer: Engineer, store: SQLiteStore, node: Node, parent: str | None
) -> Node:
    """What the propose and evaluate steps do to a candidate: the pre-checks, then the stages if it passed."""
    return precheck(engineer.task, store, node, parent) or await engineer.evaluate(node)


async def _through_the_engineer(root: Path, store: SQLiteStore, cases: dict[str, Case]) -> dict[str, Node]:
    """Every 'engineer' row in one pool of two slots, concurrently, each candidate a child of the seed."""
    task = load_task(write_task(root / "toy", yaml_text=TASK_YAML.format(timeout=TIMEOUT)))
    pool = EvaluatorPool(task, 2, root / "work")
    await pool.start()
    try:
        engineer = Engineer(task, pool)
        seed = store.add_node(
            await _checked_and_evaluated(
                engineer, store, Node(run_id="engineer", code=task.initial_code), None
            )
        )
        assert seed.stage is Stage.EVALUATED and seed.failure is None, seed.error

        async def one(case: Case) -> Node:
            node = Node(run_id="engineer", code=case.code, parent_ids=[seed.id])
            return store.add_node(await _checked_and_evaluated(engineer, store, node, seed.code))

        names = [n for n, c in cases.items() if c.how == "engineer"]
        return dict(zip(names, await asyncio.gather(*(one(cases[n]) for n in names)), strict=True))
    finally:
        await pool.close()


async def _in_a_broken_sandbox(root: Path, store: SQLiteStore, case: Case) -> Node:
    task = load_task(write_task(root / "setsid", evaluator=SETSID_REFUSED, timeout=TIMEOUT))
    pool = EvaluatorPool(task, 1, root / "work-setsid")
    await pool.start()
    try:
        return store.add_node(
            await _checked_and_evaluated(
                Engineer(task, pool), store, Node(run_id="sandbox", code=case.code), None
            )
        )
    finally:
        await pool.close()


def _evaluated_seed(store: SQLiteStore, spec: RunSpec) -> None:
    """The run and its initial program, evaluated already (what a proposal builds on)."""
    assert spec.name
    store.put_run(RunRecord(id=spec.name, task="toy", spec=spec.to_dict()))
    code = load_task(spec.task).initial_code
    store.add_node(Node(run_id=spec.name, code=code, stage=Stage.EVALUATED, score=-8.5, metrics={"f": -8.5}))


async def _proposed(store: SQLiteStore, spec: RunSpec, agents: Agents) -> Node:
    """The first child of the seed, proposed by `propose_step` as a Kubernetes Job would."""
    _evaluated_seed(store, spec)
    try:
        return await propose_step(load_context(store, spec.name or ""), agents)
    finally:
        await agents.close()


async def _judged(store: SQLiteStore, task_dir: Path, verdict: str) -> Node:
    """propose_step with the LLM judge on: the Researcher's change applies, and the judge refuses it."""

    def answer(body: dict, index: int) -> Reply:
        if body["messages"][0]["content"].startswith("You are the judge"):
            return Reply(verdict)
        return Reply(
            "MOTIVATION: x nearer 3.\n<<<<<<< SEARCH\n    x = 0.5\n=======\n    x = 2.0\n>>>>>>> REPLACE\n"
        )

    with OpenAIServer(answer) as server:
        llm = {"endpoint": server.url, "model": "scripted", "maxRetries": 0}
        spec = RunSpec(task=str(task_dir), name="judged", llm=llm, llmJudge={"enabled": True})
        researcher, judge = LLMClient(spec.llm), LLMClient(spec.llm)
        agents = Agents(
            Researcher(researcher, spec.llm),
            OfflineAnalyzer(),
            client=researcher,
            judge=LLMJudge(judge, spec.llm_judge),
            clients=[judge],
        )
        return await _proposed(store, spec, agents)


async def _near_duplicate(store: SQLiteStore, task_dir: Path) -> Node:
    """propose_step twice: the second child is the first (still awaiting its evaluation), written otherwise."""
    _evaluated_seed(store, RunSpec(task=str(task_dir), name="novelty"))
    agents = Agents(Rewritten(), OfflineAnalyzer())
    first = await propose_step(load_context(store, "novelty"), agents)
    assert first.stage is Stage.PROPOSED and first.canonical_hash, first.error
    return await propose_step(load_context(store, "novelty"), agents)


def _in_flight(root: Path, store: SQLiteStore, case: Case) -> Node:
    task_dir = write_task(root / "flight", timeout=TIMEOUT)
    spec = RunSpec(
        task=str(task_dir),
        name="flight",
        budget={"maxCandidates": 3},
        parallelism={"evaluators": 2, "proposers": 1, "proposalsAhead": 2},
    )
    evolution = Evolution(spec, load_task(task_dir), store, Twice(case.code), root / "work-flight")
    asyncio.run(evolution.run())
    (twin,) = [n for n in store.list_nodes("flight") if n.stage is Stage.REJECTED_NOVELTY]
    return twin


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcomes]:
    root = tmp_path_factory.mktemp("kinds")
    store = SQLiteStore(root / "store.db")
    cases = {n: c for n, c in CASES.items() if not c.bwrap or bwrap_works()}
    nodes = asyncio.run(_through_the_engineer(root, store, cases))
    nodes["sandbox setup"] = asyncio.run(_in_a_broken_sandbox(root, store, cases["sandbox setup"]))
    toy = write_task(root / "plain")
    answers = {
        "llm down": Reply(status=500, error="the model is overloaded"),
        "malformed answer": Reply(CASES["malformed answer"].code),
    }
    for name, reply in answers.items():
        with OpenAIServer(lambda body, index, reply=reply: reply) as server:
            llm = {"endpoint": server.url, "model": "scripted", "maxRetries": 0}
            spec = RunSpec(task=str(toy), name=name.replace(" ", "-"), llm=llm)
            agents = Agents(Researcher(LLMClient(spec.llm), spec.llm), OfflineAnalyzer())
            nodes[name] = asyncio.run(_proposed(store, spec, agents))
    nodes["judged unoriginal"] = asyncio.run(_judged(store, toy, CASES["judged unoriginal"].code))
    bare = write_task(root / "bare", program=NO_LITERALS)
    spec = RunSpec(task=str(bare), name="offline")
    nodes["nothing to change"] = asyncio.run(
        _proposed(store, spec, Agents(OfflineProposer(), OfflineAnalyzer()))
    )
    nodes["near duplicate"] = asyncio.run(_near_duplicate(store, toy))
    nodes["duplicate in flight"] = _in_flight(root, store, cases["duplicate in flight"])
    yield Outcomes(store, nodes)
    store.close()


@pytest.mark.parametrize("name", list(CASES))
def test_every_failure_is_stored_with_its_kind(name: str, outcomes: Outcomes) -> None:
    case = CASES[name]
    if case.bwrap and not bwrap_works():
        pytest.skip("needs bubblewrap's namespaces (as root without them nothing stops this program)")
    node = outcomes.nodes[name]
    assert node.failure is case.kind, (node.stage, node.error, node.log_tail[-300:])
    assert node.stage is not Stage.EVALUATED and node.error  # the message for people is still there
    assert outcomes.store.get_node(node.id).failure is case.kind  # and the kind survives the store


def test_the_table_covers_every_kind() -> None:
    assert {c.kind for c in CASES.values()} | ELSEWHERE == set(FailureKind)
