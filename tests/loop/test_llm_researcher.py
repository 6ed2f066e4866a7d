"""The LLM Researcher and Analyzer against a real local HTTP server speaking the OpenAI protocol, driven
through the `openai` SDK. Each scripted answer must end as the right node state with a clear recorded reason."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import make_agents
from kubevolve.runtime.local import Evolution
from tests.kit.openai_server import OpenAIServer, Reply

GOOD_DIFF = "MOTIVATION: move x toward 3, the optimum.\n<<<<<<< SEARCH\n    x = 0.5\n=======\n    x = 2.0\n>>>>>>> REPLACE\n"
REWRITE = (
    "MOTIVATION: jump straight to the optimum.\n```python\ndef solve():\n    x = 3.0\n    y = -1.0\n"
    "    return x, y\n```\n"
)
CRASHING_DIFF = (
    "MOTIVATION: a bolder x.\n<<<<<<< SEARCH\n    x = 0.5\n=======\n    x = 1 / 0\n>>>>>>> REPLACE\n"
)


def is_analyzer(body) -> bool:
    return body["messages"][0]["content"].startswith("You are the Analyzer")


class Script:
    """Researcher answers in order; the Analyzer always answers with a numbered insight."""

    def __init__(self, *answers: Reply | str, analysis: str = "INSIGHT-{n}: the change moved f."):
        self.answers = [a if isinstance(a, Reply) else Reply(a) for a in answers]
        self.analysis = analysis
        self.researcher_calls = 0
        self.analyzer_calls = 0

    def __call__(self, body, index) -> Reply:
        if is_analyzer(body):
            self.analyzer_calls += 1
            return Reply(self.analysis.format(n=self.analyzer_calls))
        answer = self.answers[min(self.researcher_calls, len(self.answers) - 1)]
        self.researcher_calls += 1
        return answer


def llm_run(task_dir, store, tmp_path, server, name="llm-run", requests=None, **fields):
    llm = {
        "endpoint": server.url,
        "model": "scripted-1",
        "inputCostPerMtok": 1.0,
        "outputCostPerMtok": 2.0,
        **fields.pop("llm", {}),
    }
    engineer = {"debugRetries": 0, **fields.pop("engineer", {})}
    spec = RunSpec(
        task=str(task_dir),
        name=name,
        llm=llm,
        engineer=engineer,
        parallelism=fields.pop("parallelism", {"evaluators": 1, "proposers": 1, "proposalsAhead": 0}),
        **fields,
    )
    agents = make_agents(spec)
    if requests is not None:  # record what the Researcher was handed, to compare with what it sent
        propose = agents.proposer.propose

        async def recording(request):
            requests.append(request)
            return await propose(request)

        agents.proposer.propose = recording

    async def go():
        try:
            evolution = Evolution.of_agents(
                spec,
                load_task(task_dir),
                store,
                agents,
                tmp_path / "work",
            )
            return await evolution.run()
        finally:
            await agents.close()

    record = asyncio.run(go())
    return record, store.list_nodes(name)


def test_a_diff_that_applies(toy_task, store, tmp_path):
    with OpenAIServer(Script(GOOD_DIFF)) as server:
        record, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 2})
    child = nodes[1]
    assert child.stage is Stage.EVALUATED and child.score == pytest.approx(-1.0 - 2.25)
    assert child.motivation == "move x toward 3, the optimum."
    assert child.proposer == "llm:scripted-1" and "-    x = 0.5\n+    x = 2.0" in child.diff
    assert child.llm["prompt_tokens"] > 0 and child.llm["cost_usd"] > 0
    researcher = [t for t in child.transcript if t["purpose"] == "researcher"]
    assert researcher and researcher[0]["completion"] == GOOD_DIFF
    assert "INSIGHT-" in next(i.text for i in store.list_insights("llm-run") if i.id == child.insight_id)
    assert any(t["purpose"] == "analyzer" for t in child.transcript)


def test_a_full_rewrite(toy_task, store, tmp_path):
    with OpenAIServer(Script(REWRITE)) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 2})
    assert nodes[1].stage is Stage.EVALUATED and nodes[1].score == 0.0
    assert nodes[1].code.startswith("import math\n\n# EVOLVE-BLOCK-START\ndef solve():\n    x = 3.0")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("I would change x to something larger.", "proposal failed: the answer has no 'MOTIVATION:' line"),
        (
            "MOTIVATION: bigger x.\nJust set x to 2.",
            "neither SEARCH/REPLACE edits nor a ```python code block",
        ),
        (
            "MOTIVATION: z.\n<<<<<<< SEARCH\n    z = 0.5\n=======\n    z = 1\n>>>>>>> REPLACE\n",
            "proposal failed: SEARCH block 1 not found in parent",
        ),
        (
            GOOD_DIFF + "<<<<<<< SEARCH\nimport math\n=======\nimport os\n>>>>>>> REPLACE\n",
            "proposal failed: SEARCH block 2 edits code outside the EVOLVE-BLOCK",
        ),
    ],
)
def test_bad_answers_are_recorded_rejections(toy_task, store, tmp_path, answer, reason):
    with OpenAIServer(Script(answer)) as server:
        record, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 2})
    assert record.phase == "Succeeded"
    child = nodes[1]
    assert child.stage is Stage.REJECTED_STATIC and reason in child.error
    assert child.transcript[0]["completion"] == answer  # the bad answer is kept for inspection
    assert child.llm["cost_usd"] > 0  # and it was paid for


def test_429_then_success(toy_task, store, tmp_path):
    script = Script(Reply(status=429, error="slow down", headers={"retry-after": "0"}), GOOD_DIFF)
    with OpenAIServer(script) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 2})
    assert script.researcher_calls == 2  # the SDK retried after the 429
    assert nodes[1].stage is Stage.EVALUATED


def test_5xx_exhausting_retries_is_a_clear_failure(toy_task, store, tmp_path):
    script = Script(Reply(status=503, error="overloaded", headers={"retry-after": "0"}))
    with OpenAIServer(script) as server:
        _, nodes = llm_run(
            toy_task, store, tmp_path, server, budget={"maxCandidates": 2}, llm={"maxRetries": 2}
        )
    assert script.researcher_calls == 3
    assert nodes[1].stage is Stage.REJECTED_STATIC
    assert "failed with HTTP 503 after 2 retries: overloaded" in nodes[1].error


def test_a_timeout(toy_task, store, tmp_path):
    with OpenAIServer(Script(Reply(GOOD_DIFF, delay=1.5))) as server:
        _, nodes = llm_run(
            toy_task,
            store,
            tmp_path,
            server,
            budget={"maxCandidates": 2},
            llm={"timeoutSeconds": 0.3, "maxRetries": 0},
        )
    assert nodes[1].stage is Stage.REJECTED_STATIC
    assert nodes[1].error.startswith("proposal failed: LLM request to http://127.0.0.1:")
    assert "(scripted-1) timed out after 0.3s (0 retries)" in nodes[1].error


def test_debug_retry_fixes_a_failing_candidate(toy_task, store, tmp_path):
    script = Script(CRASHING_DIFF, GOOD_DIFF)
    with OpenAIServer(script) as server:
        _, nodes = llm_run(
            toy_task, store, tmp_path, server, budget={"maxCandidates": 3}, engineer={"debugRetries": 1}
        )
        researcher_prompts = [
            p for r, p in zip(server.requests, server.prompts(), strict=True) if not is_analyzer(r)
        ]
    failed, fixed = nodes[1], nodes[2]
    assert failed.stage is Stage.FAILED_QUICK and "ZeroDivisionError: division by zero" in failed.error
    assert fixed.stage is Stage.EVALUATED and fixed.retry_of == failed.id and fixed.attempt == 1
    assert fixed.parent_ids == failed.parent_ids
    assert "Your previous attempt failed: quick stage: ZeroDivisionError" in researcher_prompts[1]
    assert fixed.transcript[0]["purpose"] == "debug retry"


def test_a_debug_retry_after_an_edit_that_did_not_apply_gets_that_answer_back(toy_task, store, tmp_path):
    missing = "MOTIVATION: z.\n<<<<<<< SEARCH\n    z = 0.5\n=======\n    z = 1\n>>>>>>> REPLACE\n"
    with OpenAIServer(Script(missing, GOOD_DIFF)) as server:
        _, nodes = llm_run(
            toy_task, store, tmp_path, server, budget={"maxCandidates": 3}, engineer={"debugRetries": 1}
        )
        researcher_prompts = [
            p for r, p in zip(server.requests, server.prompts(), strict=True) if not is_analyzer(r)
        ]
    failed, fixed = nodes[1], nodes[2]
    assert (
        failed.error == "proposal failed: SEARCH block 1 not found in parent" and fixed.retry_of == failed.id
    )
    assert (
        "Your previous attempt failed: proposal failed: SEARCH block 1 not found in parent"
        in researcher_prompts[1]
    )
    assert f"Your answer was:\n````\n{missing.strip()}\n````" in researcher_prompts[1]
    assert "Your answer was" not in researcher_prompts[0] and fixed.stage is Stage.EVALUATED


def test_near_duplicates_are_rejected_before_evaluation(toy_task, store, tmp_path):
    near_copy = REWRITE.replace("    x = 3.0\n", "    x = 3.0  # the optimum\n")
    with OpenAIServer(Script(REWRITE, near_copy)) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 3})
    first, second = nodes[1], nodes[2]
    assert first.stage is Stage.EVALUATED
    assert second.stage is Stage.REJECTED_NOVELTY and second.failure is FailureKind.NEAR_DUPLICATE
    assert f"the same experiment as node {first.id}" in second.error
    assert "quick" not in second.timings  # rejected before any evaluation ran


def test_a_changed_constant_is_a_new_experiment(toy_task, store, tmp_path):
    """What the embedding filter rejected (a program's embedding barely moves with a number) is evaluated."""
    answers = [REWRITE.replace("x = 3.0", f"x = 3.{i}") for i in range(1, 6)]
    with OpenAIServer(Script(*answers)) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 6})
    assert [n.stage for n in nodes[1:]] == [Stage.EVALUATED] * 5


def test_retrieved_cognition_and_insights_appear_in_the_prompt(toy_task, store, tmp_path):
    (toy_task / "cognition").mkdir()
    (toy_task / "cognition" / "priors.md").write_text(
        "## Maximising a concave quadratic\nFor f(x) = -(x - a)^2 the maximum is at x = a; move each coordinate "
        "straight to its optimum.\nSource: elementary calculus\n"
    )
    answers = [REWRITE.replace("3.0", str(v)) for v in (1.0, 1.5, 2.0, 2.5, 3.0)]
    requests = []
    with OpenAIServer(Script(*answers)) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, requests=requests, budget={"maxCandidates": 6})
        prompts = [p for r, p in zip(server.requests, server.prompts(), strict=True) if not is_analyzer(r)]
    assert len(requests) == len(prompts) == 5
    for request, prompt in zip(requests, prompts, strict=True):
        assert [e.title for e in request.cognition] == ["Maximising a concave quadratic"]
        for entry in request.cognition:
            assert entry.title in prompt and entry.source in prompt
        for insight in request.insights:  # every insight retrieval picked was sent
            assert insight.text in prompt
        for analysis in request.analyses.values():  # and the analyses of parent and inspirations
            assert analysis in prompt
    assert len(requests[-1].insights) >= 2 and "# Lessons from earlier experiments" in prompts[-1]
    # each candidate records what was retrieved into its prompt (proposals here are one at a time, in order)
    assert [n.retrieved for n in nodes[1:]] == [
        {"insights": [i.id for i in r.insights], "cognition": [e.id for e in r.cognition]} for r in requests
    ]


def test_llm_budget_stops_new_proposals(toy_task, store, tmp_path):
    with OpenAIServer(Script(*[REWRITE.replace("3.0", f"{v / 10}") for v in range(40)])) as server:
        record, nodes = llm_run(
            toy_task,
            store,
            tmp_path,
            server,
            budget={"maxCandidates": 40, "maxLlmCost": 0.004},
            llm={"inputCostPerMtok": 1000.0},
        )
    assert record.phase == "Succeeded" and record.message.startswith("LLM budget reached")
    assert len(nodes) < 40


def test_same_seed_same_run_against_a_deterministic_endpoint(toy_task, tmp_path):
    from kubevolve.store.sqlite import SQLiteStore

    def deterministic(body, index):
        digest = hashlib.sha256((str(body.get("seed")) + body["messages"][-1]["content"]).encode()).digest()
        if is_analyzer(body):
            return Reply(f"INSIGHT {digest.hex()[:8]}")
        return Reply(REWRITE.replace("3.0", f"{digest[0] / 64:.3f}"))

    codes = []
    for attempt in range(2):
        store = SQLiteStore(tmp_path / f"s{attempt}.db")
        with OpenAIServer(deterministic) as server:
            _, nodes = llm_run(
                toy_task, store, tmp_path / str(attempt), server, budget={"maxCandidates": 6}, seed=11
            )
        codes.append([(n.code, n.stage) for n in nodes])
        store.close()
    assert codes[0] == codes[1]


def test_show_prompts_prints_the_stored_transcript(toy_task, store, tmp_path):
    from typer.testing import CliRunner

    from kubevolve.cli.app import app

    with OpenAIServer(Script(GOOD_DIFF)) as server:
        _, nodes = llm_run(toy_task, store, tmp_path, server, budget={"maxCandidates": 2})
    out = CliRunner().invoke(app, ["show", nodes[1].id, "--prompts", "--store", str(store.path)])
    assert out.exit_code == 0
    assert "researcher · scripted-1" in out.stdout and "analyzer · scripted-1" in out.stdout
    assert "# Task: toy" in out.stdout and "x = 2.0" in out.stdout  # the prompt and the completion
    plain = CliRunner().invoke(app, ["show", nodes[1].id, "--json", "--store", str(store.path)])
    assert "transcript" not in plain.stdout


def test_api_key_is_sent_but_never_stored(toy_task, store, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_LLM_KEY", "sk-lab-secret-123")
    with OpenAIServer(Script(GOOD_DIFF)) as server:
        llm_run(
            toy_task, store, tmp_path, server, budget={"maxCandidates": 2}, llm={"apiKeyEnv": "LAB_LLM_KEY"}
        )
        assert server.authorization and set(server.authorization) == {"Bearer sk-lab-secret-123"}
    store.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-lab-secret-123" not in path.read_bytes(), path
