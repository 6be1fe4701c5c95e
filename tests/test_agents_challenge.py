"""The LLM challenger's parse -> filter -> pool path, on fixed model outputs (toy domain)."""

import json

import pytest

from agents.challenge import Funnel
from envs.cat import CodeAsTask
from envs.challenger import ChallengerEnv, ProposalError, parse_proposal

WORLD = {"notes": 3}
GOOD_VERIFIER = ("def verify(state, answer):\n"
                 "    return state['notes'].get('dst') == {'text': 'note 1'} and 'note 1' in answer")


def attempt(*calls, answer="note 1"):
    return json.dumps({"actions": [{"name": n, "arguments": a} for n, a in calls], "answer": answer})


GET = ("get_note", {"key": "k1"})
SET = ("set_note", {"key": "dst", "text": "note 1"})
SOLUTION = attempt(GET, SET)
FAILURES = [attempt(GET), attempt(("set_note", {"key": "dst", "text": "note 2"})), attempt(SET, answer="no idea")]


def proposal(instruction="Copy note k1 to 'dst' and tell me its text.", verifier=GOOD_VERIFIER,
             solution=SOLUTION, failures=FAILURES):
    parts = [f"Sure, here is a task.\n<instruction>{instruction}</instruction>",
             f"<verifier>\n{verifier}\n</verifier>", f"<solution>{solution}</solution>"]
    parts += [f"<failure>{f}</failure>" for f in failures]
    return "\n".join(parts)


def run(text):
    env = ChallengerEnv("toy", explore_turns=2, challenger="llm:fixed")
    env.reset(seed=0, options={"world": WORLD})
    _, reward, terminated, _, info = env.step(text)
    assert terminated and reward == float("task" in info)
    funnel = Funnel()
    funnel.add(info, text)
    return (CodeAsTask.from_json(info["task"]) if "task" in info else None), funnel


CASES = {
    "kept": (proposal(), None),
    "no_tags": ("<instruction>I would like a task</instruction> but nothing else", "unparsed"),
    "two_failures": (proposal(failures=FAILURES[:2]), "unparsed"),
    "bad_json": (proposal(solution='{"actions": [}'), "unparsed"),
    "syntax": (proposal(verifier="def verify(state, answer)\n    return True"), "parse_error"),
    "infeasible": (proposal(solution=attempt(("teleport", {}))), "infeasible_solution"),
    "raises": (proposal(verifier="def verify(state, answer):\n    return state['nope'] > 1"), "verifier_error"),
    "non_bool": (proposal(verifier="def verify(state, answer):\n    return answer"), "verifier_non_bool"),
    "hangs": (proposal(verifier="def verify(state, answer):\n    while True:\n        pass"), "verifier_timeout"),
    "wrong": (proposal(verifier="def verify(state, answer):\n    return 'note 2' in answer"), "solution_failed"),
    "lenient": (proposal(verifier="def verify(state, answer):\n    return 'note 1' in answer"), "lenient_verifier"),
}
LAST_STAGE = {None: "kept", "unparsed": "proposals", "parse_error": "parsed", "infeasible_solution": "parsed",
              "verifier_error": "parsed", "verifier_non_bool": "parsed", "verifier_timeout": "parsed",
              "solution_failed": "verifier_ran", "lenient_verifier": "solution_passed"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_proposal_lands_in_its_funnel_bucket(case):
    text, reason = CASES[case]
    task, funnel = run(text)
    assert (task is not None) == (reason is None)
    stages = ["proposals", "parsed", "verifier_ran", "solution_passed", "kept"]
    last = stages.index(LAST_STAGE[reason])
    assert [funnel.reached[s] for s in stages] == [1] * (last + 1) + [0] * (len(stages) - last - 1)
    if reason is not None:
        assert funnel.reasons == {reason: 1}


def test_kept_task_carries_provenance_and_its_filter_record():
    task, _ = run(proposal())
    assert isinstance(task, CodeAsTask)
    assert task.provenance["challenger"] == "llm:fixed" and task.filter["failures_rejected"] == 3
    assert task.world == WORLD and task.domain == "toy"


def test_exploration_runs_real_tools_then_asks_for_the_task():
    env = ChallengerEnv("toy", explore_turns=2)
    _, info = env.reset(seed=0, options={"world": WORLD})
    assert "<verifier>" in info["policy"] and {t["function"]["name"] for t in info["tools"]} == {"get_note", "set_note", "add"}
    obs, _, done, _, _ = env.step('{"name": "get_note", "arguments": {"key": "k2"}}')
    assert obs == "note 2" and not done
    obs, _, done, _, _ = env.step('{"name": "add", "arguments": {"a": 1, "b": 2}}')
    assert obs.startswith("3") and "Now write your task" in obs and not done
    _, _, done, _, _ = env.step("I am done exploring")
    assert done and env.proposal == "I am done exploring"
    assert [e["output"] for e in env.exploration] == ["note 2", "3"]


def test_parse_errors_say_what_is_missing():
    with pytest.raises(ProposalError, match="one <verifier> section"):
        parse_proposal("<instruction>x</instruction>", "toy", WORLD, "t")
    with pytest.raises(ProposalError, match="failures\\[0\\].actions\\[0\\].name"):
        parse_proposal(proposal(failures=['{"actions": [{"arguments": {}}]}'] * 3), "toy", WORLD, "t")
