"""Which tasks a run trains and is held out on: the split, a pool's tasks and the scripted ones."""

import pytest

from envs.pool import append_pool
from envs.prompt_tools import ListedTools, listed_tools
from toy_domain import copy_task
from train.tasks import EmptyPoolError, Selection, is_llm, is_multi_call, make_env, pool_tasks, scripted_tasks, split


def toy(i, llm=False, domain="toy"):
    return copy_task(id=f"{domain}-{'llm' if llm else 's'}{i}", domain=domain,
                     provenance={"challenger": "llm:tiny" if llm else "scripted"})


def test_split_holds_out_as_many_as_asked_and_trains_on_the_rest():
    tasks = [toy(i) for i in range(6)]
    parts = split(tasks, ["toy"], {"toy": 2}, seed=0)["toy"]
    assert len(parts["heldout"]) == 2 and len(parts["train"]) == 4
    assert sorted(parts["train"] + parts["heldout"]) == sorted(t.id for t in tasks)


def test_split_always_keeps_one_task_for_training():
    parts = split([toy(i) for i in range(3)], ["toy"], {"toy": 10}, seed=0)["toy"]
    assert len(parts["train"]) == 1 and len(parts["heldout"]) == 2
    assert split([toy(0)], ["toy"], {"toy": 1}, seed=0)["toy"] == {"train": ["toy-s0"], "heldout": []}


def test_split_holds_out_nothing_for_a_domain_it_is_not_asked_for_and_ignores_other_domains():
    tasks = [toy(i) for i in range(4)] + [toy(i, domain="calculation") for i in range(4)]
    parts = split(tasks, ["toy"], {"calculation": 2}, seed=0)
    assert list(parts) == ["toy"] and parts["toy"]["heldout"] == [] and len(parts["toy"]["train"]) == 4


def test_split_holds_out_scripted_tasks_before_the_llms():
    tasks = [toy(i, llm=True) for i in range(4)] + [toy(i) for i in range(3)]
    for seed in range(5):
        parts = split(tasks, ["toy"], {"toy": 3}, seed=seed)["toy"]
        assert sorted(parts["heldout"]) == ["toy-s0", "toy-s1", "toy-s2"]
    parts = split(tasks, ["toy"], {"toy": 4}, seed=0)["toy"]
    assert {"toy-s0", "toy-s1", "toy-s2"} < set(parts["heldout"]) and len(parts["heldout"]) == 4


def test_split_is_the_same_for_a_seed_and_shuffles_the_training_tasks():
    tasks = [toy(i) for i in range(20)]
    first = split(tasks, ["toy"], {"toy": 5}, seed=3)
    assert first == split(list(reversed(tasks)), ["toy"], {"toy": 5}, seed=3)
    assert first["toy"]["train"] != sorted(first["toy"]["train"])


def test_a_domains_split_is_its_own_whatever_else_the_run_trains():
    """Each domain shuffles with its own seed: adding a domain to a run keeps the others' held-out tasks,
    and two domains of as many tasks are not held out at the same positions."""
    tasks = [toy(i, domain=d) for d in ("toy", "calculation") for i in range(20)]
    alone = split(tasks, ["toy"], {"toy": 5}, seed=1)["toy"]
    both = split(tasks, ["calculation", "toy"], {"toy": 5, "calculation": 5}, seed=1)
    assert both["toy"] == alone
    positions = {d: [int(i.rsplit("s", 1)[1]) for i in both[d]["train"]] for d in both}
    assert positions["toy"] != positions["calculation"]


def test_split_refuses_a_domain_without_tasks():
    with pytest.raises(EmptyPoolError, match="the pool has no calculation tasks"):
        split([toy(0)], ["toy", "calculation"], {}, seed=0)


def test_a_pool_gives_only_the_runs_domains_tasks_that_fit(tmp_path):
    path = tmp_path / "pool.jsonl"
    long = copy_task(id="toy-long")  # two calls
    short = copy_task(id="toy-short", solution=copy_task().failures[0])  # one call
    append_pool(path, [long, short, toy(0, domain="calculation")])
    assert [t.id for t in pool_tasks(str(path), ["toy"], Selection({"toy": 1}))] == ["toy-short"]
    with pytest.raises(EmptyPoolError, match=r"no toy tasks \(2 there, none within"):
        pool_tasks(str(path), ["toy"], Selection({"toy": 0}, prompt_tools={"toy": ["add"]}))
    with pytest.raises(EmptyPoolError, match="there is no pool file"):
        pool_tasks(str(tmp_path / "missing.jsonl"), ["toy"], Selection())
    with pytest.raises(EmptyPoolError, match="there is no pool file"):
        pool_tasks(str(tmp_path), ["toy"], Selection())


def test_scripted_tasks_asks_for_more_until_enough_fit_and_gives_exactly_n():
    tasks = scripted_tasks("calculation", 0, 7, Selection({"calculation": 1}))
    assert len(tasks) == 7 and all(len(t.solution.actions) <= 1 for t in tasks)
    assert len(scripted_tasks("calculation", 0, 5, Selection())) == 5


def test_no_scripted_tasks_asked_needs_no_scripted_challenger():
    assert scripted_tasks("toy", 0, 0, Selection()) == []
    with pytest.raises(EmptyPoolError, match="no scripted challenger"):
        scripted_tasks("toy", 0, 1, Selection())


def test_a_task_is_multi_call_from_two_calls():
    assert is_multi_call(copy_task()) and not is_multi_call(copy_task(solution=copy_task().failures[0]))


def test_only_a_models_task_is_the_llms():
    assert is_llm(copy_task(provenance={"challenger": "llm:tiny"}))
    assert not is_llm(copy_task()) and not is_llm(copy_task(provenance={"challenger": "scripted"}))


def test_a_domain_listing_no_prompt_tools_gets_the_plain_env():
    assert not isinstance(make_env("toy", copy_task(), max_turns=4, prompt_tools={"toy": []}), ListedTools)


def test_the_vector_envs_wrappers_list_nothing_for_no_names_and_every_steps_info_lists_only_the_names():
    """The trainer's and held-out vector envs take listed_tools(...): a domain listing none keeps its whole prompt
    (not one listing finish alone), and a listing holds in each step's info as in reset's."""
    assert listed_tools([]) == [] and listed_tools(None) == []
    (wrap,) = listed_tools(["get_note"])
    task = copy_task()
    env = wrap(make_env("toy", task, max_turns=4, prompt_tools={}))
    _, info = env.reset(options={"task_id": task.id})
    *_, step_info = env.step('{"name": "add", "arguments": {"a": 2, "b": 3}}')
    assert [t["function"]["name"] for t in info["tools"]] == [t["function"]["name"] for t in step_info["tools"]] == [
        "get_note", "finish"]


def test_the_cursor_draws_every_task_once_an_epoch_in_a_new_order_each_epoch():
    from train.trainer import Cursor

    cursor = Cursor(20, seed=0)
    first, second = cursor.take(20), cursor.take(20)
    assert sorted(first) == sorted(second) == list(range(20)) and first != second


def test_the_cursor_takes_across_epochs_what_one_item_at_a_time_would():
    from train.trainer import Cursor

    cursor, walked = Cursor(7, seed=3), Cursor(7, seed=3)
    taken = [i for n in (3, 5, 1, 9, 7) for i in cursor.take(n)]
    assert taken == [walked.take(1)[0] for _ in range(25)] == [i for e in range(4) for i in walked.order(e)][:25]
    assert cursor.state() == walked.state() == {"epoch": 3, "index": 4}


def test_a_warm_start_epoch_shows_every_demonstration_once_in_batches_of_one_domain():
    from agents.policy import Trajectory
    from train.trainer import warm_start_plan

    demos = [Trajectory([1, 2], [0, 1], [0.0, 0.0], [1], [], f"t{i}", "ab"[i % 2]) for i in range(13)]
    plan = warm_start_plan(demos, batch=3, seed=0, epoch=0)
    assert sorted(i for batch in plan for i in batch) == list(range(13))
    assert all(len(batch) <= 3 and len({demos[i].domain for i in batch}) == 1 for batch in plan)
    assert len(plan) == 5  # a: 7 demonstrations in 3 batches, b: 6 in 2


@pytest.mark.parametrize("n, world", [(8, 2), (10, 3), (2, 4)])
def test_the_processes_shards_cover_every_episode_once_in_order_and_differ_in_size_by_one_at_most(n, world):
    from train.trainer import shard

    shards = [shard(n, rank, world) for rank in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_rollouts_seed_is_the_same_on_resume_and_differs_for_each_process_step_and_phase():
    from train.config import TrainConfig
    from train.trainer import step_seed

    config = TrainConfig(seed=7)
    seeds = {step_seed(config, phase, step, rank) for phase in ("rl", "eval") for step in (1, 2) for rank in (0, 1)}
    assert len(seeds) == 8 and step_seed(config, "rl", 1, 0) == step_seed(TrainConfig(seed=7), "rl", 1, 0)
    assert step_seed(TrainConfig(seed=8), "rl", 1, 0) != step_seed(config, "rl", 1, 0)
