"""The optional LLM judge against a local OpenAI-protocol server, through the real client and the local runtime:
a pass lets the candidate be evaluated, a rejection settles it with the judge's reason before any evaluation,
and an answer without a verdict (or a failed request) passes the candidate with a warning; its prompt holds the
nearest neighbours and the task's rules, and its cost counts in the run's LLM cost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import RunSpec, SpecError, parse_run_spec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import make_agents
from kubevolve.loop.budget import llm_cost
from kubevolve.loop.engineer.llm_judge import parse_verdict
from kubevolve.runtime.local import Evolution
from tests.kit.openai_server import OpenAIServer, Reply

FIRST = "MOTIVATION: FIRST-IDEA: move x to 2.\n<<<<<<< SEARCH\n    x = 0.5\n=======\n    x = 2.0\n>>>>>>> REPLACE\n"
SECOND = "MOTIVATION: SECOND-IDEA: move y to 0.\n<<<<<<< SEARCH\n    y = 0.5\n=======\n    y = 0.0\n>>>>>>> REPLACE\n"


def role(body: dict) -> str:
    system = body["messages"][0]["content"]
    return (
        "judge"
        if system.startswith("You are the judge")
        else "analyzer"
        if "Analyzer" in system
        else "researcher"
    )


class Script:
    """The Researcher proposes FIRST, then SECOND; the judge answers `verdicts` in turn (the last repeats)."""

    def __init__(self, *verdicts: Reply | str):
        self.verdicts = [v if isinstance(v, Reply) else Reply(v) for v in verdicts]
        self.proposals = 0
        self.judged: list[dict] = []

    def __call__(self, body: dict, index: int) -> Reply:
        kind = role(body)
        if kind == "analyzer":
            return Reply("WHAT CHANGED: x.\nOBSERVED EFFECT: f moved.\nLIKELY CAUSE: f.\nNEXT: y.")
        if kind == "judge":
            self.judged.append(body)
            return self.verdicts[min(len(self.judged) - 1, len(self.verdicts) - 1)]
        self.proposals += 1
        return Reply(FIRST if self.proposals == 1 else SECOND)


def judged_run(toy_task, store, tmp_path, script: Script, candidates: int = 3, **judge) -> list[Node]:
    with OpenAIServer(script) as server:
        spec = RunSpec(
            task=str(toy_task),
            name="judged",
            llm={"endpoint": server.url, "model": "researcher", "maxRetries": 0, "inputCostPerMtok": 1.0},
            llmJudge={"enabled": True, "model": "judge-model", "inputCostPerMtok": 2.0, **judge},
            engineer={"debugRetries": 0},
            budget={"maxCandidates": candidates},
            parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
        )
        agents = make_agents(spec)

        async def go():
            try:
                evolution = Evolution.of_agents(
                    spec,
                    load_task(toy_task),
                    store,
                    agents,
                    tmp_path / "work",
                )
                await evolution.run()
                return evolution
            finally:
                await agents.close()

        evolution = asyncio.run(go())
    nodes = store.list_nodes("judged")
    assert evolution.state.spent_usd == pytest.approx(sum(llm_cost(n) for n in nodes))
    return nodes


def test_a_pass_is_evaluated_and_its_cost_counted(toy_task, store, tmp_path):
    script = Script("VERDICT: PASS\nREASON: a new direction.")
    nodes = judged_run(toy_task, store, tmp_path, script)
    first, second = nodes[1], nodes[2]
    for node in (first, second):
        assert node.stage is Stage.EVALUATED and node.judge == {
            "verdict": "pass",
            "reason": "a new direction.",
        }
        assert node.llm["judge_cost_usd"] > 0 and node.timings["judge"] >= 0
        judge_entry = next(t for t in node.transcript if t["purpose"] == "llm judge")
        assert judge_entry["model"] == "judge-model"
        assert llm_cost(node) == pytest.approx(
            node.llm["cost_usd"] + node.llm["judge_cost_usd"] + node.llm["analysis_cost_usd"]
        )
    assert {b["model"] for b in script.judged} == {"judge-model"} and len(script.judged) == 2
    assert script.judged[0]["temperature"] == 0.0


def test_a_rejection_settles_the_candidate_before_evaluation(toy_task, store, tmp_path):
    script = Script("VERDICT: REJECT\nREASON: the same change as Neighbour 1.")
    nodes = judged_run(toy_task, store, tmp_path, script)
    for node in nodes[1:]:
        assert node.stage is Stage.REJECTED_STATIC and node.failure is FailureKind.LLM_JUDGE_REJECTED
        assert node.error == "LLM judge: the same change as Neighbour 1."
        assert node.judge["verdict"] == "reject" and "quick" not in node.timings  # never evaluated
        assert node.analysis["analyzer"] == "offline" and node.insight_id  # the refused idea is analysed
        assert "address the judge's objection" in node.analysis["next"]


def test_an_answer_without_a_verdict_passes_with_a_warning(toy_task, store, tmp_path, caplog):
    script = Script("It looks fine to me.", Reply(status=500, error="judge down"))
    with caplog.at_level(logging.WARNING, logger="kubevolve.loop.engineer.llm_judge"):
        nodes = judged_run(toy_task, store, tmp_path, script)
    malformed, unavailable = nodes[1], nodes[2]
    assert malformed.stage is Stage.EVALUATED and malformed.judge["verdict"] == "malformed"
    assert "no VERDICT line" in malformed.judge["reason"] and malformed.llm["judge_cost_usd"] > 0
    assert unavailable.stage is Stage.EVALUATED and unavailable.judge["verdict"] == "unavailable"
    assert "judge down" in unavailable.judge["reason"]
    assert "has no verdict; the candidate passes" in caplog.text and "passes unjudged" in caplog.text


def test_the_judges_prompt_holds_the_neighbours_and_the_task_rules(toy_task, store, tmp_path):
    script = Script("VERDICT: PASS\nREASON: new.")
    judged_run(toy_task, store, tmp_path, script, neighbours=2)
    first, second = (b["messages"][1]["content"] for b in script.judged)
    for prompt in (first, second):
        assert "Maximise f(x, y)" in prompt  # the task's description
        assert "These modules must not be imported: socket." in prompt
        assert "These top-level names must stay defined: solve." in prompt
        assert "Only the code between `EVOLVE-BLOCK-START` and `EVOLVE-BLOCK-END` may change." in prompt
    assert "Motivation: FIRST-IDEA: move x to 2." in first and "+    x = 2.0" in first
    # the second candidate is shown its nearest neighbours, the first candidate among them, with similarities
    assert (
        "Motivation: SECOND-IDEA" in second
        and "## Neighbour 2 (" in second
        and "## Neighbour 3" not in second
    )
    assert "Motivation: FIRST-IDEA: move x to 2." in second and "similarity 0." in second


@pytest.mark.parametrize(
    ("answer", "verdict", "reason"),
    [
        ("VERDICT: PASS\nREASON: new", "pass", "new"),
        ("**Verdict:** reject\n**Reason:** breaks the rules", "reject", "breaks the rules"),
        ("VERDICT: REJECT", "reject", "no reason given"),
        ("VERDICT: PASS\nVERDICT: REJECT\nREASON: unsure", "malformed", None),
        ("VERDICT: maybe", "malformed", None),
    ],
)
def test_verdicts_are_parsed_strictly(answer, verdict, reason):
    got, why = parse_verdict(answer)
    assert got == verdict and (reason is None or why == reason)


def test_the_judge_needs_an_endpoint_and_is_off_by_default():
    assert RunSpec(task="t").llm_judge.enabled is False
    assert make_agents(RunSpec(task="t")).judge is None
    with pytest.raises(
        SpecError, match="llmJudge is enabled, but neither llmJudge.endpoint nor llm.endpoint"
    ):
        parse_run_spec({"task": "t", "llmJudge": {"enabled": True}})
    with pytest.raises(SpecError, match="spec.llmJudge.neighbours: Input should be less than or equal to 10"):
        parse_run_spec({"task": "t", "llm": {"endpoint": "http://x/v1"}, "llmJudge": {"neighbours": 11}})
