"""The filter keeps exactly the sound tasks and names why it rejects the others."""

import errno
import os
import subprocess
import sys

import pytest

from envs.cat import Attempt, ToolCall
from envs.challenger import stage_of
import envs.filter
import envs.pool
from envs.filter import REASONS, filter_task, filter_tasks, main
from envs.sandbox import Limits, RunResult
from envs.sandbox.local import LocalSandbox
from envs.state import State
from envs.pool import append_pool, load_pool
from toy_domain import ToyEnv, copy_task
from train.demos import solution_actions

SOUND = copy_task()
GET = ToolCall("get_note", {"key": "k1"})

CASES = {
    "parse_error": copy_task(id="syntax", verifier="def verify(state, answer)\n    return True\n"),
    "verifier_error": copy_task(id="raises", verifier="def verify(state, answer):\n    return state['notes']['dst']['text'] == 1 / 0\n"),
    "verifier_timeout": copy_task(id="hangs", verifier="import time\ndef verify(state, answer):\n    time.sleep(60)\n"),
    "verifier_non_bool": copy_task(id="nonbool", verifier="def verify(state, answer):\n    return 'note 1' if 'note 1' in answer else ''\n"),
    "solution_failed": copy_task(id="wrong-solution", solution=Attempt((GET,), "note 1")),
    "lenient_verifier": copy_task(id="lenient", verifier="def verify(state, answer):\n    return 'note 1' in answer\n"),
    "infeasible_solution": copy_task(id="infeasible", solution=Attempt((ToolCall("get_note", {"name": "k1"}),) + SOUND.solution.actions, "note 1")),
    "too_few_failures": copy_task(id="few", failures=SOUND.failures[:2]),
    "unknown_domain": copy_task(id="nodomain", domain="chess"),
}


def test_sound_task_is_kept_with_its_failures_counted():
    verdict = filter_task(SOUND)
    assert verdict.kept and verdict.reason is None and verdict.failures_rejected == 3


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_unsound_task_is_rejected_for_its_reason(reason):
    verdict = filter_task(CASES[reason])
    assert (verdict.kept, verdict.reason) == (False, reason), verdict.detail


def test_an_infeasible_solution_names_each_bad_call_once():
    verdict = filter_task(CASES["infeasible_solution"])
    assert verdict.detail.count("get_note: ") == 1 and "unexpected argument(s) 'name'" in verdict.detail


def test_a_solution_whose_tool_refuses_a_call_is_infeasible_whatever_its_answer_claims():
    refused = ToolCall("get_note", {"key": "k404"})
    task = copy_task(id="refused", solution=Attempt((refused,) + SOUND.solution.actions, SOUND.solution.answer))
    verdict = filter_task(task)
    assert (verdict.kept, verdict.reason) == (False, "infeasible_solution")
    assert "no note 'k404'" in verdict.detail
    # The same call in a failure case is how failures often fail: the task stays sound.
    failing = copy_task(id="refused-failure", failures=(Attempt((refused,), "none"),) + SOUND.failures)
    assert filter_task(failing).kept


def test_a_solution_that_finishes_among_its_calls_is_judged_on_what_finish_said_as_played():
    """Played, the episode ends at the call that finishes it: the answer after it is never said."""
    finish = ToolCall("finish", {"answer": "note 1"})
    task = copy_task(id="finishes", solution=Attempt(SOUND.solution.actions + (finish,), "ignored"),
                     verifier="def verify(state, answer):\n    return state['notes'].get('dst') == {'text': 'note 1'} "
                              "and answer == 'note 1'\n")
    assert filter_task(task).kept
    env = ToyEnv(tasks=[task])
    env.reset(options={"task": task})
    for action in solution_actions(task):
        _, reward, terminated, _, _ = env.step(action)
        if terminated:
            break
    assert reward == 1.0
    said_too_late = copy_task(id="late", failures=(Attempt((finish,), "note 1"),) + SOUND.failures[1:])
    assert filter_task(said_too_late).kept, "a failure that finishes before copying the note fails, as played"


def played_reward(task, max_turns: int) -> float:
    env = ToyEnv(tasks=[task], max_turns=max_turns)
    env.reset(options={"task": task})
    for action in solution_actions(task):
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return reward
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize("finishes", [False, True])
def test_a_solution_longer_than_an_episode_is_infeasible_exactly_where_play_truncates_it(finishes):
    """Played, a solution takes its calls and then finish (unless a call of its own finished): one action each."""
    finish = (ToolCall("finish", {"answer": "note 1"}),) if finishes else ()
    limit = 3 + len(SOUND.solution.actions) + 1
    for reads, fits in ((3, True), (4, False)):
        calls = (GET,) * reads + SOUND.solution.actions + finish
        task = copy_task(id=f"long{reads}", solution=Attempt(calls, "note 1"))
        verdict = filter_task(task, max_turns=limit)
        assert verdict.kept == (played_reward(task, limit) == 1.0) == fits, verdict.detail
    assert verdict.reason == "infeasible_solution" and f"takes {limit + 1} actions" in verdict.detail
    assert filter_task(task, max_turns=limit + 1).kept


class SecondThoughts(LocalSandbox):
    """Rejects on its second run whatever the verifier said (or ends it as ``second``): a flaky
    verifier, made certain."""

    def __init__(self, second: RunResult = RunResult("failed")) -> None:
        super().__init__(workers=1)
        self.runs = 0
        self.second = second

    def verify(self, source: str, state: State, answer: str, *, limits: Limits | None = None,
               elsewhere: bool = False) -> RunResult:
        self.runs += 1
        self.elsewhere.append(elsewhere)
        result = super().verify(source, state, answer, limits=limits, elsewhere=elsewhere)
        return self.second if self.runs == 2 else result

    elsewhere: list[bool] = []


def test_a_verifier_that_changes_its_mind_on_the_same_final_state_is_flaky():
    with SecondThoughts() as sandbox:
        sandbox.elsewhere = []
        verdict = filter_task(SOUND, sandbox)
    assert (verdict.kept, verdict.reason, sandbox.runs) == (False, "verifier_flaky", 2)
    assert sandbox.elsewhere == [False, True], "the second judgement asks for another worker"
    assert stage_of(verdict) == "verifier_ran"


@pytest.mark.parametrize("second, reason", [(RunResult("error", "boom", "exception"), "verifier_error"),
                                            (RunResult("timeout", "too slow"), "verifier_timeout"),
                                            (RunResult("error", "the CPU time limit was reached", "cpu"),
                                             "verifier_timeout")])
def test_a_verifier_that_fails_to_finish_only_when_run_again_is_rejected_for_it(second, reason):
    with SecondThoughts(second) as sandbox:
        sandbox.elsewhere = []
        verdict = filter_task(SOUND, sandbox)
    assert (verdict.kept, verdict.reason, sandbox.runs) == (False, reason, 2)


def test_a_verifier_that_accepts_doing_nothing_is_lenient_though_it_rejects_every_failure_case():
    """'None of the failure cases' mistakes happened' holds for an agent that does nothing at all."""
    source = ("def verify(state, answer):\n"
              "    dst = state['notes'].get('dst')\n"
              "    return not (dst is None and 'note 1' in answer) and dst != {'text': 'note 2'} "
              "and \"don't know\" not in answer\n")
    task = copy_task(id="none-of-the-mistakes", verifier=source)
    verdict = filter_task(task)
    assert (verdict.kept, verdict.reason) == (False, "lenient_verifier") and "doing nothing" in verdict.detail
    assert played_reward(copy_task(id="idle", verifier=source, solution=Attempt((), "")), 5) == 1.0


def test_a_verifier_that_accepts_an_empty_answer_is_lenient():
    """An agent that runs out of turns, or finishes saying nothing, leaves an empty answer: doing nothing
    means no call and no answer at all, not a short one."""
    source = ("def verify(state, answer):\n"
              "    return answer == '' or (state['notes'].get('dst') == {'text': 'note 1'} and 'note 1' in answer)\n")
    verdict = filter_task(copy_task(id="silent", verifier=source))
    assert (verdict.kept, verdict.reason) == (False, "lenient_verifier") and "doing nothing" in verdict.detail


@pytest.mark.parametrize("i, accepts", [(0, "dst is None and 'note 1' in answer"), (1, "dst == {'text': 'note 2'}"),
                                        (2, "dst == {'text': 'note 1'} and \"don't know\" in answer")])
def test_a_verifier_that_accepts_any_one_failure_case_is_lenient_and_named_for_it(i, accepts):
    """Every failure case is judged, the first and the last too: one accepted is enough to reject the task."""
    source = ("def verify(state, answer):\n    dst = state['notes'].get('dst')\n"
              f"    return (dst == {{'text': 'note 1'}} and 'note 1' in answer) or ({accepts})\n")
    verdict = filter_task(copy_task(id=f"lenient-{i}", verifier=source))
    assert (verdict.kept, verdict.reason) == (False, "lenient_verifier") and f"failures[{i}]" in verdict.detail


def test_a_solution_that_a_terminal_tool_ends_is_as_long_as_its_calls_up_to_that_tool(monkeypatch):
    """A transfer to a human ends an episode as finish does: calls listed after it are never played, and
    do not make the solution too long for an episode."""
    monkeypatch.setattr(ToyEnv, "terminal_tools", frozenset({"set_note"}))
    source = "def verify(state, answer):\n    return state['notes'].get('dst') == {'text': 'note 1'}\n"
    failures = SOUND.failures[:2] + (Attempt((ToolCall("set_note", {"key": "dst", "text": "note 0"}),), "note 1"),)
    task = copy_task(id="transfers", verifier=source, failures=failures,
                     solution=Attempt(SOUND.solution.actions + (GET,) * 3, "note 1"))
    assert played_reward(task, 3) == 1.0
    verdict = filter_task(task, max_turns=3)
    assert verdict.kept, verdict.detail


def test_a_task_with_an_unknown_domain_is_rejected_for_it_before_its_failure_cases_are_counted():
    """The reasons come in the documented order: the first problem found is the one reported."""
    verdict = filter_task(copy_task(id="few-nodomain", domain="chess", failures=SOUND.failures[:1]))
    assert (verdict.kept, verdict.reason) == (False, "unknown_domain")


def test_failure_cases_count_once_each_with_doing_nothing_which_every_task_is_tried_on():
    first, second, _ = SOUND.failures
    reordered = Attempt(tuple(ToolCall(c.name, dict(reversed(c.arguments.items()))) for c in second.actions),
                        second.answer)  # the same mistake, its arguments written in another order
    spaced = Attempt(first.actions, f"  {first.answer.replace(' ', chr(10))} ")  # the same answer, spaced otherwise
    assert first.answer.strip() and spaced.answer != first.answer
    for failures in ((first,) * 3, (first, Attempt((), " "), first), (second, Attempt((), " "), reordered),
                     (first, spaced, Attempt((), "\t"))):
        verdict = filter_task(copy_task(id="padded", failures=failures))
        assert (verdict.kept, verdict.reason) == (False, "too_few_failures")
        assert "2 distinct failure cases, doing nothing" in verdict.detail
    assert filter_task(copy_task(id="two-and-nothing", failures=(first, second, first))).kept
    assert filter_task(copy_task(id="four", failures=SOUND.failures + (Attempt((), ""),))).kept


def test_a_failure_case_longer_than_an_episode_is_judged_where_play_cuts_it():
    """Its wrong write comes after the last turn, so played it scores 1: the verifier is lenient."""
    wrong = Attempt(SOUND.solution.actions + (GET,) * 3 + (ToolCall("set_note", {"key": "dst", "text": "note 2"}),),
                    "note 1")
    source = "def verify(state, answer):\n    return state['notes'].get('dst') == {'text': 'note 1'}\n"
    task = copy_task(id="cut", verifier=source, failures=SOUND.failures[:2] + (wrong,))
    limit = len(wrong.actions) - 1
    assert played_reward(copy_task(id="cut-played", verifier=source, solution=wrong), limit) == 1.0
    verdict = filter_task(task, max_turns=limit)
    assert (verdict.kept, verdict.reason) == (False, "lenient_verifier") and "failures[2]" in verdict.detail
    assert filter_task(task, max_turns=limit + 2).kept, "whole, it leaves the wrong note: rejected as it should be"


def test_a_world_that_cannot_be_built_is_a_parse_error_not_a_crash():
    verdict = filter_task(copy_task(id="bad-world", world={"notes": "three"}))
    assert (verdict.kept, verdict.reason) == (False, "parse_error")
    assert "cannot be built" in verdict.detail and "ValueError" in verdict.detail


def test_malformed_record_is_a_parse_error_naming_the_field():
    data = SOUND.to_json()
    data["failures"][0]["actions"] = "nope"
    verdict = filter_task(data)
    assert verdict.reason == "parse_error" and "failures[0].actions" in verdict.detail


def test_verifier_that_raises_only_on_a_failure_case_is_a_verifier_error():
    source = ("def verify(state, answer):\n"
              "    return state['notes']['dst']['text'] == 'note 1' and 'note 1' in answer\n")
    verdict = filter_task(copy_task(verifier=source))
    assert verdict.reason == "verifier_error" and "failures[0]" in verdict.detail and "KeyError" in verdict.detail


def test_batch_report_counts_every_reason_and_stamps_kept_tasks():
    batch = [SOUND, copy_task(id="sound-2")] + list(CASES.values())
    kept, report, verdicts = filter_tasks(batch)
    assert [t.id for t in kept] == ["toy-copy", "sound-2"]
    assert kept[0].filter["solution"] == "pass" and kept[0].filter["failures_rejected"] == 3
    assert report.kept == 2 and report.total == len(batch)
    assert dict(report.rejected) == {reason: 1 for reason in CASES}
    assert set(report.rejected) <= set(REASONS)
    assert "kept 2 of 11" in str(report)


def test_command_line_filters_a_pool_and_exits_2_on_a_bad_record(tmp_path):
    pool = tmp_path / "pool.jsonl"
    # a verifier's error text that UTF-8 cannot hold (a lone surrogate) and that would draw its own report lines
    forger = copy_task(id="forger\n", verifier="def verify(state, answer):\n"
                                                 "    raise ValueError('\\ud800\\x1b[2J\\nkept 3 of 3')\n")
    append_pool(pool, [SOUND, CASES["lenient_verifier"], forger])
    out = tmp_path / "kept.jsonl"
    # the toy domain is registered by tests/conftest.py; run through a small shim that does the same
    shim = ("import sys; sys.path.insert(0, 'tests'); import conftest; "
            "from envs.filter import main; raise SystemExit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", shim, str(pool), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "kept 1 of 3" in done.stdout and "rejected 'lenient': lenient_verifier" in done.stdout
    assert "rejected 'forger\\n': verifier_error:" in done.stdout
    assert "\x1b" not in done.stdout and "kept 3 of 3" not in done.stdout.splitlines()
    assert out.read_text().count("\n") == 1
    with open(pool, "a") as f:
        f.write('{"id": "x", "domain": "toy"}\n')
    append_pool(pool, [SOUND])
    done = subprocess.run([sys.executable, "-c", shim, str(pool)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pool.jsonl:4: world: is missing" in done.stderr


@pytest.mark.parametrize("bad_line, message", [
    (copy_task(id="b", instruction="caf\u00e9").dumps().encode().replace("é".encode(), b"\xe9"),
     "pool.jsonl:2: not valid UTF-8"),
    (SOUND.dumps().encode(), "pool.jsonl:2: task id 'toy-copy' is already on line 1"),
    (copy_task(id="b", verifier="def verify(state, answer)\n    return True\n").dumps().encode(),
     "pool.jsonl:2: task 'b': its verifier does not compile: expected ':' (verifier line 1)"),
], ids=["not-utf8", "repeated-id", "verifier-syntax"])
def test_command_line_exits_2_naming_file_and_line_of_a_bad_task_file(tmp_path, capsys, bad_line, message):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [SOUND])
    with open(pool, "ab") as f:
        f.write(bad_line + b"\n")
    assert main([str(pool)]) == 2
    assert message in capsys.readouterr().err


def test_command_line_exits_2_on_a_folder_where_a_file_belongs(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [SOUND])
    assert main([str(tmp_path)]) == 2
    assert main([str(pool), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Is a directory" in err and "is a folder: name a JSONL file" in err


def test_command_line_exits_2_before_filtering_when_out_cannot_be_written(tmp_path, capsys, monkeypatch):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [SOUND])
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only disk, as access(2) says of it
    monkeypatch.setattr(envs.filter, "filter_tasks", lambda tasks: pytest.fail("filtered for nothing"))
    assert main([str(pool), "--out", str(tmp_path / "new" / "kept.jsonl")]) == 2
    assert "kept.jsonl cannot be written here" in capsys.readouterr().err


def test_command_line_exits_2_when_the_disk_cannot_hold_the_kept_tasks(tmp_path, capsys, monkeypatch):
    pool, out = tmp_path / "pool.jsonl", tmp_path / "kept.jsonl"
    append_pool(pool, [SOUND])
    out.write_text("")

    def full(path, tasks):
        raise OSError(errno.ENOSPC, "No space left on device")  # the append takes back what it wrote (test_pool)

    monkeypatch.setattr(envs.pool, "append_pool", full)
    assert main([str(pool), "--out", str(out)]) == 2
    assert "the kept tasks were not appended" in capsys.readouterr().err


def test_command_line_judges_each_solution_at_the_episode_length_it_is_given(tmp_path, capsys):
    """--max-turns is the length of the episodes the tasks will be played in: the sound task's solution takes
    3 actions (2 calls, then finish), so 2 turns cannot play it; fewer than 1 is a usage error."""
    pool, out = tmp_path / "pool.jsonl", tmp_path / "kept.jsonl"
    append_pool(pool, [SOUND])
    assert main([str(pool), "--max-turns", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rejected 'toy-copy': infeasible_solution" in printed and "kept 0 of 1" in printed
    assert main([str(pool), "--max-turns", "3", "--out", str(out)]) == 0
    assert "kept 1 of 1" in capsys.readouterr().out and [t.id for t in load_pool(out)] == ["toy-copy"]
    with pytest.raises(SystemExit) as stop:
        main([str(pool), "--max-turns", "0"])
    assert stop.value.code == 2 and "--max-turns must be at least 1" in capsys.readouterr().err


def test_command_line_dedupe_keeps_the_first_task_of_each_id_and_never_appends_one_twice(tmp_path, capsys):
    pool, out = tmp_path / "pool.jsonl", tmp_path / "kept.jsonl"
    append_pool(pool, [SOUND, copy_task(instruction="a second task under the same id")])
    assert main([str(pool), "--dedupe", "--out", str(out)]) == 0
    assert "kept 1 of 1" in capsys.readouterr().out
    assert main([str(pool), "--dedupe", "--out", str(out)]) == 0
    assert "1 kept tasks were already in" in capsys.readouterr().out
    assert [t.instruction for t in load_pool(out)] == [SOUND.instruction]


def test_a_copy_of_a_failure_case_is_not_played_again(monkeypatch):
    played = []
    replay = ToyEnv.replay
    monkeypatch.setattr(ToyEnv, "replay", lambda env, task, attempt, *rest: played.append(attempt)
                        or replay(env, task, attempt, *rest))
    first, second, third = SOUND.failures
    verdict = filter_task(copy_task(id="copies", failures=(first, second, first, third, second) * 20))
    assert verdict.kept and verdict.failures_rejected == 100
    assert played == [SOUND.solution, envs.filter.NOTHING, first, second, third]


def test_judging_a_task_stops_at_its_time_budget_however_many_failure_cases_it_lists(monkeypatch):
    """A thousand failure cases for a verifier that takes most of its time limit on each would hold a
    step for an hour."""
    monkeypatch.setattr(envs.filter, "JUDGING_SECONDS", 1.0)
    source = ("import time\ndef verify(state, answer):\n    time.sleep(0.2)\n"
              "    return state['notes'].get('dst') == {'text': 'note 1'} and 'note 1' in answer\n")
    task = copy_task(id="slow", verifier=source, failures=tuple(Attempt((), f"wrong {i}") for i in range(50)))
    verdict = filter_task(task)
    assert (verdict.kept, verdict.reason) == (False, "verifier_timeout") and verdict.seconds < 3
    assert "ran past 1 s, with failures[" in verdict.detail and 0 < verdict.failures_rejected < 10
    monkeypatch.setattr(envs.filter, "JUDGING_SECONDS", 60.0)
    assert filter_task(copy_task(id="slow", verifier=source)).kept
