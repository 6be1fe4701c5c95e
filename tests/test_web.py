"""The web-browsing domain: the browser tools, the generated site, the scripted challenger's tasks and
the Gymnasium environment."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the environments)
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.filter import filter_tasks
from envs.state import State, fork, state_hash
from envs.web.env import WebEnv
from envs.web.challenger import crawl, make_tasks
from envs.web.world import build_site
from envs.web.tools import VIEW_LINES, click_url, go_to_previous_page, scroll_down, scroll_up, view

ENV_ID = "SelfChallenge-WebBrowsing-v0"
WORLD = {"seed": 0}


@pytest.fixture(scope="module")
def tasks() -> list[CodeAsTask]:
    return make_tasks(seed=0, n=510)


@pytest.fixture
def state() -> State:
    return fork(WebEnv.base_state(WORLD))


@pytest.fixture(scope="module")
def env() -> WebEnv:
    return WebEnv(tasks=make_tasks(seed=0, n=8), max_turns=50)


def sample(tasks: list[CodeAsTask], n: int) -> list[CodeAsTask]:
    """Every k-th task, so that the sample spans the question families."""
    return tasks[::max(1, len(tasks) // n)][:n]


def action(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": call.arguments})


# ---------------------------------------------------------------- tools


def test_view_shows_the_home_page_and_where_the_browser_is(state: State) -> None:
    shown = view(state)
    assert shown.startswith("Current page: / (")
    assert f"Showing lines 1-{VIEW_LINES} of " in shown
    assert "[Product catalogue](/products)" in shown
    assert state["browser"] == {"url": "/", "top": 0, "history": []}


def test_scroll_down_moves_a_window_and_stops_at_the_bottom(state: State) -> None:
    total = len(state["pages"].get_readonly("/")["lines"])
    moved = scroll_down(state)
    assert f"Showing lines {VIEW_LINES + 1}-{total} of {total}" in moved and "end of page" in moved
    before = state_hash(state)
    assert scroll_down(state).startswith("Error: already at the bottom")
    assert state_hash(state) == before and state["browser"]["top"] == VIEW_LINES


def test_the_window_says_what_lies_above_and_below_and_scroll_up_moves_it_back_one_window(state: State) -> None:
    url = max(state["pages"], key=lambda u: len(state["pages"].get_readonly(u)["lines"]))
    total = len(state["pages"].get_readonly(url)["lines"])
    assert total > 2 * VIEW_LINES
    top = click_url(state, url)
    assert "above" not in top and f"{total - VIEW_LINES} more lines below (scroll_down)" in top
    scroll_down(state)
    second = scroll_down(state)
    assert f"Showing lines {2 * VIEW_LINES + 1}-" in second and f"{2 * VIEW_LINES} lines above (scroll_up)" in second
    back = scroll_up(state)
    assert f"Showing lines {VIEW_LINES + 1}-{2 * VIEW_LINES} of {total}; {VIEW_LINES} lines above (scroll_up), " in back


def test_scroll_up_at_the_top_is_an_error_that_changes_nothing(state: State) -> None:
    before = state_hash(state)
    assert scroll_up(state).startswith("Error: already at the top")
    assert state_hash(state) == before
    scroll_down(state)
    assert "Showing lines 1-" in scroll_up(state)


def test_back_at_the_start_of_history_is_an_error_that_changes_nothing(state: State) -> None:
    before = state_hash(state)
    assert go_to_previous_page(state).startswith("Error: there is no previous page")
    assert state_hash(state) == before


def test_back_returns_to_the_previous_page_where_it_was_left(state: State) -> None:
    scroll_down(state)
    click_url(state, "/news")
    back = go_to_previous_page(state)
    assert back.startswith("Current page: / (") and state["browser"] == {"url": "/", "top": VIEW_LINES, "history": []}


def test_unknown_url_leaves_the_browser_where_it_was(state: State) -> None:
    click_url(state, "/staff")
    before = state_hash(state)
    assert click_url(state, "/no-such-page").startswith("Error: there is no page '/no-such-page'")
    assert state_hash(state) == before and state["browser"]["url"] == "/staff"


@pytest.mark.parametrize(("written", "url"), [("/staff?page=2", "/staff?page=2"), ("staff?page=2", "/staff?page=2"),
                                              ("/staff/", "/staff"), ("https://shop.example/news", "/news")])
def test_click_understands_the_ways_an_agent_writes_a_url(state: State, written: str, url: str) -> None:
    assert click_url(state, written).startswith(f"Current page: {url} (")


def test_an_episode_reads_pages_without_copying_them_and_keeps_its_own_browser() -> None:
    base = WebEnv.base_state(WORLD)
    one, two = fork(base), fork(base)
    click_url(one, "/products")
    scroll_down(one)
    assert two["browser"] == {"url": "/", "top": 0, "history": []}
    assert not one["pages"].touched()


# ---------------------------------------------------------------- site


def test_site_is_deterministic_per_seed() -> None:
    assert build_site(3) == build_site(3)
    assert build_site(3) != build_site(4)
    assert state_hash(WebEnv.build_world({"seed": 3})) == state_hash(WebEnv.build_world({"seed": 3}))


def test_every_link_leads_to_a_page_and_every_page_is_reachable_from_home(state: State) -> None:
    site = build_site(0)
    links = {url for page in site.values() for line in page["lines"] for url in re.findall(r"\]\((/[^)]*)\)", line)}
    assert links <= set(site)
    assert set(crawl(state)) == set(site)


def test_world_sizes_grow_with_the_world_spec() -> None:
    pages = WebEnv.build_world({"seed": 1, "products": 200, "people": 120})["pages"]
    assert sum(url.startswith("/products/") for url in pages.records) == 200
    assert sum(url.startswith("/staff/") for url in pages.records) == 120


# ---------------------------------------------------------------- challenger


def test_challenger_makes_500_distinct_tasks_that_all_pass_the_filter(tasks: list[CodeAsTask]) -> None:
    assert len(tasks) >= 500
    assert len({t.instruction for t in tasks}) == len(tasks)
    assert len({t.id for t in tasks}) == len(tasks)
    kept, report, _ = filter_tasks(tasks)
    assert report.kept == report.total == len(tasks), str(report)


def test_challenger_is_deterministic_per_seed(tasks: list[CodeAsTask]) -> None:
    again = make_tasks(seed=0, n=40)
    assert [t.dumps() for t in again] == [t.dumps() for t in tasks[:40]]
    assert [t.instruction for t in make_tasks(seed=1, n=5)] != [t.instruction for t in again[:5]]


def test_tasks_spread_from_one_to_more_than_six_tool_calls(tasks: list[CodeAsTask]) -> None:
    calls = {len(t.solution.actions) for t in tasks}
    assert min(calls) == 1 and max(calls) > 6
    assert all(t.provenance["challenger"] == "scripted" and len(t.failures) >= 3 for t in tasks)


def test_failure_cases_are_rejected_for_a_real_reason(tasks: list[CodeAsTask], env: WebEnv) -> None:
    """Every failure is feasible (valid calls) and wrong: the verifier says False, it does not err."""
    for task in sample(tasks, 25):
        for failure in task.failures:
            result, observations, problems = env.replay(task, failure)
            assert problems == [], (task.id, problems)
            assert not any(o.startswith("Error:") for o in observations), (task.id, observations)
            assert result.status == "failed", (task.id, failure, result)


def test_solution_played_through_step_scores_one_and_each_failure_zero(tasks: list[CodeAsTask], env: WebEnv) -> None:
    for task in sample(tasks, 8):
        for attempt, reward in [(task.solution, 1.0)] + [(f, 0.0) for f in task.failures]:
            env.reset(options={"task": task})
            for call in attempt.actions:
                observation, r, terminated, _, _ = env.step(action(call))
                assert not observation.startswith("Error:") and r == 0.0 and not terminated
            _, r, terminated, _, info = env.step(action(ToolCall("finish", {"answer": attempt.answer})))
            assert terminated and r == reward, (task.id, attempt, info["verifier"])


def test_a_code_action_browses_with_the_same_tools(tasks: list[CodeAsTask], env: WebEnv) -> None:
    task = next(t for t in tasks if len(t.solution.actions) > 2)
    env.reset(options={"task": task})
    calls = "\n".join(f"print({c.name}(**{c.arguments!r}))" for c in task.solution.actions)
    observation, *_ = env.step(f"```python\n{calls}\nfinish({task.solution.answer!r})\n```")
    assert "Current page:" in observation
    assert env.verify().status == "ok"


def test_a_wrong_final_page_fails_a_task_that_asks_to_stay_on_a_page(tasks: list[CodeAsTask], env: WebEnv) -> None:
    task = next(t for t in tasks if t.provenance["family"] == "compare:open")
    wandered = Attempt(task.solution.actions + (ToolCall("click_url", {"url": "/"}),), task.solution.answer)
    assert env.replay(task, task.solution)[0].status == "ok"
    assert env.replay(task, wandered)[0].status == "failed"


# ---------------------------------------------------------------- environment


def test_check_env_passes() -> None:
    env = gym.make(ENV_ID)
    check_env(env.unwrapped)
    env.close()


def test_make_without_arguments_resets_and_steps() -> None:
    env = gym.make(ENV_ID)
    observation, info = env.reset(seed=0)
    assert "home page (/)" in observation
    assert {t["function"]["name"] for t in info["tools"]} == {
        "click_url", "go_to_previous_page", "scroll_down", "scroll_up", "view", "finish"}
    assert env.step(action(ToolCall("view")))[0].startswith("Current page: / (")
    assert env.step(action(ToolCall("click_url", {"url": "/staff"})))[0].startswith("Current page: /staff (")
    assert env.step(action(ToolCall("go_to_previous_page")))[0].startswith("Current page: / (")
    _, reward, terminated, truncated, _ = env.step(action(ToolCall("finish", {"answer": "no idea"})))
    assert terminated and not truncated and reward == 0.0
    env.close()


def test_default_pool_is_32_tasks_of_seed_0() -> None:
    pool = WebEnv.default_tasks()
    assert len(pool) == 32 and all(t.world == WORLD for t in pool)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_browse_in_parallel(mode: str) -> None:
    envs_ = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode=mode)
    observations, _ = envs_.reset(seed=0)
    assert len(observations) == 8 and all("home page (/)" in o for o in observations)
    observations, rewards, *_ = envs_.step([action(ToolCall("click_url", {"url": "/news"}))] * 8)
    assert all(o.startswith("Current page: /news (") for o in observations) and not rewards.any()
    _, rewards, terminated, _, _ = envs_.step([action(ToolCall("finish", {"answer": "?"}))] * 8)
    assert terminated.all()
    envs_.close()


def test_help_teaches_the_env_in_gymnasium_sections() -> None:
    doc = WebEnv.__doc__ or ""
    for section in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State",
                    "Episode End", "Arguments"):
        assert f"## {section}" in doc
