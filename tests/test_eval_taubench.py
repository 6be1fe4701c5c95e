"""The tau-bench harness: golden tasks as CaTs in our envs score as upstream would (every gold replay
1.0; doing nothing exactly the tasks that need nothing), upstream's conversation protocol, pass^k,
the task-file reader and the command line. The reference data is read from ../shared/taubench."""

from __future__ import annotations

import errno
import functools
import json
import logging
import textwrap
from typing import Any

import pytest

from agents.decoding import SamplingSettings
from agents.models import ModelNotFoundError
from agents.policy import ContextLimitExceeded, ModelPolicy, TextPolicy, scripted
from envs.user import GREETING, STOP
from eval import cli, taubench
from eval.cli import InputError, run
from eval.taubench import (Source, do_nothing_policy, evaluate, failure_causes, from_checkout, from_golden, goal_of,
                           gold_policy, parse_ids, pass_hat, read_task_file, scripted_user)
from test_agents_policy import counting_player, tiny_model, tokenizer  # noqa: F401 (tokenizer is a fixture)
from test_taubench_compat import SHARED, needs_shared

GOLDEN = ("retail_dev", "retail_train", "airline_test_0_10")

pytestmark = needs_shared


@functools.cache
def source(name: str) -> Source:
    return from_golden(SHARED / "golden" / f"{name}.json")


@functools.cache
def raw(name: str) -> dict[str, Any]:
    return json.loads((SHARED / "golden" / f"{name}.json").read_text())


def call(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def stopping_user(heard: list[str]):
    """Opens with its instruction, answers the first message it gets, stops at the second; keeps
    what the agent said to it in ``heard``."""

    def user(messages):
        if len(messages) == 2:
            return goal_of(messages)
        heard.append(messages[-1]["content"])
        return "Thanks, that is all. " + STOP if len(heard) > 1 else "Go on."

    return user


def test_every_golden_task_scores_1_when_the_gold_actions_are_replayed_and_the_outputs_said():
    scores = {}
    for name in GOLDEN:
        summary = evaluate(source(name), gold_policy(source(name).tasks), scripted_user())
        scores[name] = sum(summary["successes"].values())
        assert summary["pass^k"] == {"1": 1.0}, name
    assert sum(scores.values()) == 530


def test_doing_nothing_scores_exactly_the_tasks_whose_gold_leaves_the_data_unchanged_and_says_nothing():
    for name in GOLDEN:
        golden = raw(name)
        expected = {i for i, t in enumerate(golden["tasks"])
                    if t["final_data_hash"] == golden["initial_data_hash"] and not t["required_outputs"]}
        summary = evaluate(source(name), do_nothing_policy, scripted_user())
        assert {int(i) for i, c in summary["successes"].items() if c} == expected, name
        assert summary["average_reward"] == len(expected) / len(golden["tasks"]), name


def test_a_task_selected_twice_plays_once_and_counts_once():
    retail = source("retail_dev")
    summary = evaluate(retail, gold_policy(retail.tasks), scripted_user(), task_ids=parse_ids("0-1,1,0", 20))
    assert (summary["tasks"], summary["successes"], summary["average_reward"]) == (2, {"0": 1, "1": 1}, 1.0)


def test_the_gold_actions_without_the_required_outputs_score_0():
    airline = source("airline_test_0_10")
    task = airline.tasks[8]
    assert task.outputs
    silent = scripted([call(a.name, **a.arguments) for a in task.actions] + [call("finish", answer="")])
    assert evaluate(airline, silent, scripted_user(), task_ids=[8])["successes"] == {"8": 0}


def test_each_record_says_which_part_held_and_the_summary_counts_failures_by_cause(tmp_path):
    """Upstream's reward info: the data against the gold replay's (``r_actions``), each required output said."""
    airline = source("airline_test_0_10")
    task = airline.tasks[8]
    assert task.outputs and raw("airline_test_0_10")["tasks"][8]["final_data_hash"] != raw("airline_test_0_10")[
        "initial_data_hash"]
    gold = [call(a.name, **a.arguments) for a in task.actions]
    first = task.outputs[0]
    agents = {"gold": gold + [call("respond", content=", ".join(task.outputs)), call("finish", answer="")],
              "silent": gold + [call("finish", answer="")],
              "lazy": [call("respond", content=f"Your refund is {first}."), call("finish", answer="")]}
    records = {}
    for name, replies in agents.items():
        summary = evaluate(airline, scripted(replies), scripted_user(), task_ids=[8], out=tmp_path / name)
        records[name] = json.loads((tmp_path / name / "episodes.jsonl").read_text())
        records[name]["failures"] = summary["failures"]
    assert records["gold"]["r_actions"] and all(records["gold"]["outputs"].values())
    assert records["gold"]["failures"] == {"failed": 0, "data": 0, "outputs": 0}
    assert records["silent"]["r_actions"] and not any(records["silent"]["outputs"].values())
    assert records["silent"]["failures"] == {"failed": 1, "data": 0, "outputs": 1}
    assert not records["lazy"]["r_actions"] and records["lazy"]["outputs"] == {o: o == first for o in task.outputs}
    assert records["lazy"]["failures"] == {"failed": 1, "data": 1, "outputs": 1}
    page = (tmp_path / "lazy" / "summary.md").read_text()
    assert "Of the 1 failed conversations, 1 ended with the wrong data" in page


def test_the_user_and_the_agent_sample_from_generators_seeded_apart():
    """Two sampling sides seeded alike would draw the same random numbers, turn by turn."""
    seeds: dict[str, list[int | None]] = {"agent": [], "user": []}

    def recording(policy, role: str) -> TextPolicy:
        class Recording(TextPolicy):
            def start(self, openings, seed=None):
                seeds[role].append(seed)
                return super().start(openings, seed)

        return Recording(policy)

    airline = source("airline_test_0_10")
    evaluate(airline, recording(gold_policy(airline.tasks), "agent"), recording(scripted_user(), "user"),
             task_ids=[8, 9], seed=5, batch_size=2)
    assert seeds["agent"] and seeds["user"] and None not in seeds["agent"] + seeds["user"]
    assert not set(seeds["agent"]) & set(seeds["user"])


def test_the_user_ending_the_conversation_ends_the_episode_and_plain_text_is_said_to_the_user(tmp_path):
    airline = source("airline_test_0_10")
    task = airline.tasks[8]
    heard: list[str] = []
    replies = ["Hello! How can I help?"] + [call(a.name, **a.arguments) for a in task.actions] \
        + [f"Done: refunds of {task.outputs[0]}, {task.outputs[1]} and {task.outputs[2]}."]
    summary = evaluate(airline, scripted(replies), stopping_user(heard), task_ids=[8], out=tmp_path)
    episode = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert summary["successes"] == {"8": 1} and episode["end_reason"] == "user_stop"
    assert heard[0] == "Hello! How can I help?"
    roles = [m["role"] for m in episode["messages"]]
    assert roles == ["system", "user", "assistant", "user"] + ["assistant", "tool"] * len(task.actions) \
        + ["assistant", "user"]
    assert episode["messages"][0]["content"].startswith(airline.wiki[:200])
    assert episode["messages"][1]["content"] == task.instruction


def test_a_malformed_call_scores_as_upstream_by_default_and_is_refused_in_strict_mode():
    """Upstream writes ``"state": 123`` into the user's address, so the data no longer matches the
    gold replay's; strict mode refuses the call and the gold actions then score 1."""
    dev = source("retail_dev")
    task = dev.tasks[0]
    sloppy = call("modify_user_address", user_id=task.user_id, address1="1 Elm St", address2="", city="Austin",
                  state=123, country="USA", zip="78701")
    said = [call("respond", content=", ".join(task.outputs))] if task.outputs else []
    agent = scripted([sloppy] + [call(a.name, **a.arguments) for a in task.actions] + said + [call("finish", answer="")])
    upstream = evaluate(dev, agent, scripted_user(), task_ids=[0])
    assert (upstream["tool_mode"], upstream["successes"]) == ("upstream", {"0": 0})
    agent = scripted([sloppy] + [call(a.name, **a.arguments) for a in task.actions] + said + [call("finish", answer="")])
    assert evaluate(dev, agent, scripted_user(), task_ids=[0], tool_mode="strict")["successes"] == {"0": 1}


@pytest.mark.parametrize("say, success", [
    (lambda out: [call("respond", content=out)], 1),
    (lambda out: [call("respond", content=out, tone="warm")], 1),  # upstream reads content and nothing else
    (lambda out: [call("finish", answer=out)], 0),  # finish ends the conversation, but reaches no user
    (lambda out: [call("respond", text=out), call("respond", content=out)], 0),  # upstream fails: no content
    (lambda out: [call("respond", content=42), call("respond", content=out)], 0),  # nor can its user take 42
])
def test_the_outputs_count_as_upstream_counts_them_only_when_a_respond_carries_them(say, success):
    airline = source("airline_test_0_10")
    task = airline.tasks[8]
    agent = scripted([call(a.name, **a.arguments) for a in task.actions] + say(", ".join(task.outputs))
                     + [call("finish", answer="")])
    assert evaluate(airline, agent, scripted_user(), task_ids=[8])["successes"] == {"8": success}


def test_a_conversation_still_going_at_the_step_limit_scores_0_even_with_the_right_data():
    dev = source("retail_dev")
    chatty = scripted([call(a.name, **a.arguments) for a in dev.tasks[0].actions] + ["Anything else?"])
    summary = evaluate(dev, chatty, scripted_user(), task_ids=[0], max_steps=4)
    assert summary["successes"] == {"0": 0}
    assert evaluate(dev, gold_policy(dev.tasks), scripted_user(), task_ids=[0], max_steps=4)["successes"] == {"0": 1}


@pytest.mark.parametrize("stops, success", [(True, 1), (False, 0)])
def test_a_message_on_the_last_step_is_answered_and_the_users_stop_scores_it(stops, success):
    """Upstream's user answers inside the agent's step, the 30th included: a stop there scores the conversation."""
    dev = source("retail_dev")
    task = dev.tasks[0]
    heard: list[str] = []
    said = ", ".join(task.outputs) or "Done."
    agent = scripted([call(a.name, **a.arguments) for a in task.actions] + [call("respond", content=said)])
    user = stopping_user(heard) if stops else scripted_user()
    if stops:
        heard.append("(an earlier message)")  # so that the first message it hears is its second
    summary = evaluate(dev, agent, user, task_ids=[0], max_steps=len(task.actions) + 1)
    assert summary["successes"] == {"0": success}
    assert heard[-1:] == ([said] if stops else [])


def test_the_simulated_user_sees_only_its_instruction_and_speaks_after_the_agents_greeting():
    dev = source("retail_dev")
    seen = []

    def chat(messages):
        seen.append([dict(m) for m in messages])
        return "  I want to cancel my order.  "

    agent = scripted(["Sure, which order?", call("finish", answer="")])
    summary = evaluate(dev, agent, chat, task_ids=[0], out=None)
    first, second = seen
    assert [m["role"] for m in first] == ["system", "user"] and dev.tasks[0].instruction in first[0]["content"]
    assert first[1]["content"] == GREETING and STOP in first[0]["content"]
    assert goal_of(first) == dev.tasks[0].instruction
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "  I want to cancel my order.  " and second[-1]["content"] == "Sure, which order?"
    assert summary["tasks"] == 1


def test_conversations_in_batches_end_as_they_would_one_at_a_time(tmp_path):
    dev = source("retail_dev")
    sizes: list[int] = []

    def episodes(batch_size: int, count: bool = False) -> list[dict[str, Any]]:
        out = tmp_path / str(batch_size)
        agent, user = gold_policy(dev.tasks), scripted_user()
        if count:
            agent, user = counting_player(agent, sizes), counting_player(user, sizes)
        evaluate(dev, agent, user, trials=2, task_ids=[0, 1, 2, 5], out=out, batch_size=batch_size)
        lines = (out / "episodes.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: (r["task_index"], r["trial"]))

    alone = episodes(1)
    together = episodes(3, count=True)
    assert together == alone and len(alone) == 8
    assert max(sizes) == 3 and sizes[:2] == [3, 3]  # the users' openings, then the agents' first actions


def test_the_trials_of_one_task_play_side_by_side(tmp_path):
    dev, sizes = source("retail_dev"), []
    agent = counting_player(gold_policy(dev.tasks), sizes)
    summary = evaluate(dev, agent, scripted_user(), trials=3, task_ids=[0], out=tmp_path, batch_size=8)
    assert summary["pass^k"]["3"] == 1.0 and max(sizes) == 3


def test_a_model_agent_and_user_in_batches_say_what_they_say_one_conversation_at_a_time(tokenizer, tmp_path):
    dev = source("retail_dev")
    model = tiny_model(context=8192)

    def episodes(batch_size: int) -> list[dict[str, Any]]:
        greedy = SamplingSettings(temperature=0.0, max_new_tokens=8)
        agent, user = ModelPolicy(model, tokenizer, greedy), ModelPolicy(model, tokenizer, greedy)
        out = tmp_path / str(batch_size)
        evaluate(dev, agent, user, task_ids=[0, 1, 2], out=out, max_steps=3, batch_size=batch_size)
        lines = (out / "episodes.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: r["task_index"])

    alone = episodes(1)
    assert episodes(3) == alone
    assert all(len(r["messages"]) > 3 for r in alone)  # the user spoke twice: its opening, and a reply


def test_a_user_past_its_context_ends_the_conversation_with_0(tmp_path):
    dev = source("retail_dev")

    def user(messages):
        if len(messages) == 2:
            return goal_of(messages)
        raise ContextLimitExceeded("the user's chat is too long")

    agent = scripted(["What is your order id?", call("finish", answer="")])
    summary = evaluate(dev, agent, user, task_ids=[0], out=tmp_path)
    episode = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert summary["successes"] == {"0": 0}
    assert (episode["end_reason"], episode["steps"], episode["messages"][-1]["role"]) == ("context_limit", 1, "assistant")


def test_pass_hat_k_matches_a_hand_computation():
    table = {0: [True, True, False, True], 1: [False] * 4, 2: [True] * 4}
    # task 0: C(3,k)/C(4,k) = 3/4, 3/6, 1/4, 0; task 1: 0; task 2: 1.
    expected = {"1": (0.75 + 0 + 1) / 3, "2": (0.5 + 0 + 1) / 3, "3": (0.25 + 0 + 1) / 3, "4": 1 / 3}
    assert pass_hat(table, 4) == pytest.approx(expected)


def test_trials_resume_and_pass_hat_k_counts_every_trial(tmp_path):
    dev = source("retail_dev")
    first = evaluate(dev, gold_policy(dev.tasks), scripted_user(), trials=2, task_ids=[0, 1], out=tmp_path)
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    again = evaluate(dev, do_nothing_policy, scripted_user(), trials=2, task_ids=[0, 1], out=tmp_path)
    assert len(lines) == 4 and (tmp_path / "episodes.jsonl").read_text().splitlines() == lines
    assert first["pass^k"] == again["pass^k"] == {"1": 1.0, "2": 1.0}
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "chart.png").is_file()


UPSTREAM_STYLE = '''\
from tau_bench.types import Task, Action

TASKS_TEST = [
    Task(
        annotator="",
        user_id="{user_id}",
        instruction={instruction!r},
        actions=[
            {actions}
        ],
        outputs={outputs!r},
    ),
]
'''


def test_a_checkout_task_file_is_read_as_data_and_scores_like_its_golden_twin(tmp_path):
    golden = raw("retail_dev")["tasks"][1]
    actions = ",\n            ".join(f"Action(name={a['name']!r}, kwargs={a['arguments']!r})" for a in golden["actions"])
    folder = tmp_path / "tau_bench" / "envs" / "retail"
    folder.mkdir(parents=True)
    (folder / "tasks_test.py").write_text(UPSTREAM_STYLE.format(user_id=golden["user_id"], actions=actions,
                                                                instruction=golden["instruction"], outputs=[]))
    (folder / "wiki.md").write_text((SHARED / "wiki_retail.md").read_text())
    (folder / "data").symlink_to(SHARED / "data" / "retail")
    checkout = from_checkout(tmp_path, "retail", "test")
    (task,) = checkout.tasks
    assert task.instruction == golden["instruction"] and task.user_id == golden["user_id"]
    assert [a.to_json() for a in task.actions] == golden["actions"]
    assert evaluate(checkout, gold_policy(checkout.tasks), scripted_user())["pass^k"] == {"1": 1.0}


def test_the_older_dict_task_format_reads_too(tmp_path):
    path = tmp_path / "tasks.py"
    path.write_text(textwrap.dedent('''\
        tasks = [
            {"annotator": 0, "user_id": "u1", "instruction": "Do it.",
             "actions": [{"name": "get_user_details", "arguments": {"user_id": "u1"}}], "outputs": ["7"]},
        ]
    '''))
    (task,) = read_task_file(path)
    assert (task.user_id, task.actions[0].arguments, task.outputs) == ("u1", {"user_id": "u1"}, ("7",))


@pytest.mark.parametrize("golden, wrong", [
    ('{"domain": "retail", "initial_data_hash": "x", "tasks": 5}', "its tasks a list"),
    ('{"domain": ["retail"], "initial_data_hash": "x", "tasks": []}', "its domain must be text"),
    ('{"domain": "retail", "initial_data_hash": "x", "tasks": [{"actions": []}]}', "KeyError: 'instruction'"),
    ('{"domain": "retail", "initial_data_hash": "x", "tasks": [{"instruction": "i", "actions": [], '
     '"required_outputs": null}]}', "outputs must be a list of text"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    (b"\xff{}", "not JSON"),
])
def test_a_malformed_golden_file_is_bad_input_naming_it(tmp_path, caplog, golden, wrong):
    (tmp_path / "golden").mkdir()
    (tmp_path / "data").symlink_to(SHARED / "data")
    (tmp_path / "wiki_retail.md").symlink_to(SHARED / "wiki_retail.md")
    path = tmp_path / "golden" / "bad.json"
    path.write_bytes(golden if isinstance(golden, bytes) else golden.encode())
    assert run(taubench.main, ["--golden", str(path), "--policy", "gold", "--out", str(tmp_path / "out")]) == 2
    assert f"{path} is not a tau-bench golden file" in caplog.text and wrong in caplog.text


@pytest.mark.parametrize("task, wrong", [
    ("Task(user_id='u', instruction='i', actions=[], outputs='abc')", "outputs must be a list of text"),
    ("Task(user_id='u', instruction='i', actions=[], outputs=[5])", "outputs must be a list of text"),
    ("Task(user_id=5, instruction='i', actions=[], outputs=[])", "user_id and instruction must be text"),
    ("Task(user_id='u', instruction='i', actions=[Action(name='x', kwargs=None)], outputs=[])", "actions must be"),
    ("Task(user_id='u', instruction='i', actions=[Action(kwargs={})], outputs=[])", "actions must be"),
    ("Task(user_id='u', instruction='i', actions={}, outputs=[])", "actions must be"),
    ("'a task'", "task 0 is not a Task"),
])
def test_a_task_of_a_type_upstreams_task_refuses_is_bad_input_naming_it(tmp_path, task, wrong):
    path = tmp_path / "tasks_test.py"
    path.write_text(f"TASKS = [{task}]\n")
    with pytest.raises(InputError, match=wrong):
        read_task_file(path)


def test_a_task_file_with_no_list_says_so_and_an_annotated_list_reads(tmp_path):
    path = tmp_path / "tasks_test.py"
    path.write_text("from tau_bench.types import Task\n")
    with pytest.raises(InputError, match="no module-level list of tasks"):
        read_task_file(path)
    path.write_text("TASKS: list = [Task(user_id='u', instruction='i', actions=[], outputs=['7'])]\n")
    assert [task.outputs for task in read_task_file(path)] == [("7",)]


def test_the_command_line_runs_the_gold_policy_and_prints_pass_hat_k(tmp_path, capsys):
    code = run(taubench.main, ["--golden", str(SHARED / "golden" / "airline_test_0_10.json"), "--domain", "airline",
                               "--policy", "gold", "--tasks", "0-2,9", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 tasks x 1 trials" in out and "| 1 | 100.0% |" in out
    assert "tools in upstream mode" in out


def test_a_rerun_into_a_folder_of_another_policys_results_exits_2_and_the_same_one_resumes(tmp_path, caplog):
    golden = ["--golden", str(SHARED / "golden" / "airline_test_0_10.json"), "--domain", "airline", "--tasks", "0-1",
              "--out", str(tmp_path)]
    assert run(taubench.main, golden + ["--policy", "gold"]) == 0
    with caplog.at_level(logging.ERROR):
        assert run(taubench.main, golden + ["--policy", "nothing"]) == 2
    assert "holds results of evaluated='gold'" in caplog.text and "evaluated='nothing'" in caplog.text
    assert run(taubench.main, golden + ["--policy", "gold"]) == 0
    assert run(taubench.main, golden + ["--policy", "gold", "--out", str(tmp_path / "settings.json")]) == 2
    for held in ("[]", "5", "not json"):  # a settings file that holds no settings is a folder to fix, not a crash
        (tmp_path / cli.SETTINGS).write_text(held)
        assert run(taubench.main, golden + ["--policy", "gold"]) == 2


def test_a_folder_a_failed_run_claimed_before_its_first_record_is_claimed_anew(tmp_path, caplog, monkeypatch):
    golden = ["--golden", str(SHARED / "golden" / "airline_test_0_10.json"), "--domain", "airline", "--tasks", "0",
              "--out", str(tmp_path)]
    monkeypatch.setattr(cli, "load_model_policy", lambda *args, **kwargs: (_ for _ in ()).throw(
        ModelNotFoundError("cannot load model 'modle'")))
    assert run(taubench.main, golden + ["--model", "modle"]) == 2  # a typo: the model never loaded
    assert run(taubench.main, golden + ["--policy", "gold"]) == 0
    assert json.loads((tmp_path / cli.SETTINGS).read_text())["evaluated"] == "gold"


def test_a_disk_that_refuses_the_records_exits_2_saying_so(tmp_path, caplog, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(taubench, "append_jsonl", full)
    golden = ["--golden", str(SHARED / "golden" / "airline_test_0_10.json"), "--domain", "airline", "--tasks", "0"]
    assert run(taubench.main, golden + ["--policy", "gold", "--out", str(tmp_path)]) == 2
    assert "No space left on device; the records written before are kept" in caplog.text


@pytest.mark.parametrize("argv, message", [
    (["--domain", "shopping", "--policy", "gold"], "unknown domain"),
    (["--golden", "/no/such/golden.json", "--policy", "gold"], "does not exist"),
    (["--policy", "gold", "--taubench-dir", "/no/such/checkout"], "not a tau-bench checkout"),
    (["--policy", "gold", "--golden", str(SHARED / "golden" / "retail_dev.json"), "--tasks", "19-20"], "only 20 tasks"),
    (["--policy", "gold", "--golden", str(SHARED / "golden" / "retail_dev.json"), "--tasks", "5-2"], "holds no task"),
    # refused before the range is listed, which would take more memory than any machine has
    (["--policy", "gold", "--golden", str(SHARED / "golden" / "retail_dev.json"), "--tasks", "0-99999999999"],
     "only 20 tasks"),
    (["--policy", "gold", "--golden", str(SHARED / "README.md")], "README.md is not a tau-bench golden file: not JSON"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--user-temperature", "-1"], "--user-temperature must be at least 0, got -1.0"),
])
def test_bad_input_exits_2_with_a_message(argv, message, caplog, monkeypatch):
    monkeypatch.delenv(taubench.ENV_VAR, raising=False)
    assert run(taubench.main, argv) == 2
    assert message in caplog.text


def test_without_tasks_the_command_says_where_to_get_them(caplog, monkeypatch):
    monkeypatch.delenv(taubench.ENV_VAR, raising=False)
    assert run(taubench.main, ["--policy", "gold", "--taubench-dir", ""]) == 2
    assert "--taubench-dir" in caplog.text and "--golden" in caplog.text


def test_conversations_in_an_async_vector_env_end_as_in_a_sync_one(tmp_path):
    dev = source("retail_dev")
    records = {}
    for mode in ("sync", "async"):
        out = tmp_path / mode
        evaluate(dev, gold_policy(dev.tasks), stopping_user([]), task_ids=[0, 1, 2, 5], out=out, batch_size=3,
                 mode=mode)
        records[mode] = sorted((json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()),
                               key=lambda r: r["task_index"])
    assert records["sync"] == records["async"] and len(records["sync"]) == 4


def test_the_agent_first_reads_the_users_opening_message_not_the_users_hidden_goal(tmp_path):
    def user(messages):
        return "Hi, it's Ada." if len(messages) == 2 else "Bye. " + STOP

    airline = source("airline_test_0_10")
    evaluate(airline, scripted(["Hello! How can I help?", call("finish", answer="")]), user, task_ids=[8], out=tmp_path)
    episode = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert episode["messages"][1] == {"role": "user", "content": "Hi, it's Ada."}
    assert airline.tasks[8].instruction not in json.dumps(episode["messages"])


def test_a_split_the_domain_does_not_have_is_refused_naming_the_splits_it_has(tmp_path):
    """Airline has a test split alone, upstream's run.py says so."""
    with pytest.raises(InputError, match="has no split 'train'; it has test"):
        from_checkout(tmp_path, "airline", "train")


def test_zero_trials_are_refused():
    """0 trials would give an empty pass^k table and a 0 average."""
    with pytest.raises(InputError, match="--trials must be at least 1"):
        evaluate(source("retail_dev"), do_nothing_policy, scripted_user(), trials=0, task_ids=[0])


def test_a_folder_with_more_trials_and_tasks_than_asked_counts_only_those_asked(tmp_path):
    """A rerun with fewer trials or tasks into a resumed folder reports exactly what it was asked for."""
    dev = source("retail_dev")  # task 0 needs a cancellation: the gold policy scores 1, doing nothing 0
    evaluate(dev, gold_policy(dev.tasks), scripted_user(), trials=1, task_ids=[0, 1], out=tmp_path)
    evaluate(dev, do_nothing_policy, scripted_user(), trials=2, task_ids=[0, 1], out=tmp_path)  # trial 1 fails task 0
    fewer = evaluate(dev, do_nothing_policy, scripted_user(), trials=1, task_ids=[0], out=tmp_path)
    assert (fewer["tasks"], fewer["successes"], fewer["pass^k"], fewer["average_reward"]) == (1, {"0": 1}, {"1": 1.0}, 1.0)


def test_the_average_reward_is_over_every_conversation_not_over_tasks(tmp_path):
    """Upstream's average reward is the mean over all results, trials included."""
    dev = source("retail_dev")
    evaluate(dev, gold_policy(dev.tasks), scripted_user(), trials=1, task_ids=[0], out=tmp_path)
    both = evaluate(dev, do_nothing_policy, scripted_user(), trials=2, task_ids=[0], out=tmp_path)
    assert both["successes"] == {"0": 1}
    assert both["average_reward"] == 0.5 and both["pass^k"] == {"1": 0.5, "2": 0.0}


def test_a_failure_without_the_parts_counts_as_failed_alone():
    """A conversation cut at the model's context has no ``r_actions``; it is failed, but not for wrong data."""
    records = [{"reward": 0.0}, {"reward": 0.0, "r_actions": False, "outputs": {"7": True}},
               {"reward": 1.0, "r_actions": True, "outputs": {}}]
    assert failure_causes(records) == {"failed": 2, "data": 1, "outputs": 0}


def test_the_records_output_check_strips_commas_as_the_reward_does(tmp_path):
    """Upstream strips commas from what the agent says, so '1,000' says the output '1000'; the record's ``outputs``
    must agree with the reward."""
    airline = source("airline_test_0_10")
    task = airline.tasks[8]
    formatted = " and ".join(f"{int(o):,}" for o in task.outputs)
    assert "," in formatted  # a thousands separator at least once
    agent = scripted([call(a.name, **a.arguments) for a in task.actions]
                     + [call("respond", content=f"Refunds: {formatted}."), call("finish", answer="")])
    summary = evaluate(airline, agent, scripted_user(), task_ids=[8], out=tmp_path)
    episode = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert summary["successes"] == {"8": 1}
    assert episode["r_actions"] and all(episode["outputs"].values())


def test_the_records_output_check_ignores_case_as_upstreams_does(tmp_path):
    """Upstream lowers both the output and what was said, so the record's ``outputs`` must agree with the reward for a
    mixed-case output."""
    from dataclasses import replace

    airline = source("airline_test_0_10")
    task = replace(airline.tasks[8], outputs=("Refund " + airline.tasks[8].outputs[0],))
    mixed = replace(airline, tasks=(task,))
    agent = scripted([call(a.name, **a.arguments) for a in task.actions]
                     + [call("respond", content=task.outputs[0].upper()), call("finish", answer="")])
    summary = evaluate(mixed, agent, scripted_user(), task_ids=[0], out=tmp_path)
    episode = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert summary["successes"] == {"0": 1} and episode["outputs"] == {task.outputs[0]: True}


class _Stop(Exception):
    pass


def test_the_command_runs_the_agent_greedy_and_the_user_at_its_temperature(tmp_path, monkeypatch):
    """Upstream's agent runs at ``--temperature`` 0.0 by default; the user at ``--user-temperature``."""
    from eval import taubench

    seen = {}
    monkeypatch.setattr(taubench.cli, "load_policy", lambda args, **settings: seen.update(agent=settings) or "agent")
    monkeypatch.setattr(taubench, "user_policy",
                        lambda agent, user_model, device, **settings: seen.update(user=settings) or "user")

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(taubench, "evaluate", stop)
    with pytest.raises(_Stop):
        taubench.main(["--golden", str(SHARED / "golden" / "airline_test_0_10.json"), "--domain", "airline",
                       "--tasks", "0", "--user-temperature", "0.5", "--out", str(tmp_path)])
    assert seen["agent"]["temperature"] == 0.0 and seen["user"]["temperature"] == 0.5
