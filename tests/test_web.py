"""The web-browsing domain: the browser tools, the generated site, the scripted challenger's tasks and
the Gymnasium environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the environments)
from envs.cat import Attempt, CodeAsTask, ToolCall
from envs.filter import filter_tasks
from envs.state import State, fork, state_hash
from envs.web.env import WebEnv
from envs.web.challenger import crawl, make_tasks
from envs.web.world import EXECUTIVE, build_site, draw_company
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


@pytest.mark.parametrize("url", ["/no-such-page", "http://[::1", "http://[x]/staff"])
def test_unknown_url_leaves_the_browser_where_it_was(state: State, url: str) -> None:
    """Addresses urlsplit cannot read among them: no page, not urllib's wording."""
    click_url(state, "/staff")
    before = state_hash(state)
    assert click_url(state, url).startswith(f"Error: there is no page {url!r}")
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


def test_one_line_left_is_written_in_the_singular(state: State) -> None:
    """'1 more line below', not '1 more lines'."""
    site = build_site(0)
    url = next(u for u, page in site.items() if len(page["lines"]) == VIEW_LINES + 1)
    assert "; 1 more line below (scroll_down)." in click_url(state, url)


def test_every_phone_extension_on_the_site_is_unique_across_seeds() -> None:
    """Departments (9000-9990) and people (2000-8999) never share an extension, nor two people one."""
    for seed in range(40):
        extensions = [line.split(": ")[1] for page in build_site(seed).values() for line in page["lines"]
                      if line.startswith("Phone extension: ")]
        assert len(extensions) == len(set(extensions)), seed
        assert all(len(e) == 4 for e in extensions), seed


def test_the_site_of_a_seed_is_the_same_in_every_process() -> None:
    """Python's hash seed changes set order between processes; the site must not depend on it."""
    code = ("import hashlib, json; from envs.web.world import build_site; "
            "print(hashlib.sha256(json.dumps(build_site(3), sort_keys=True).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=dict(os.environ, PYTHONHASHSEED=str(hash_seed))).stdout for hash_seed in (1, 2, 3)}
    assert len(digests) == 1


@pytest.mark.parametrize("written", ["/news ", " /news\u00a0", "/news\u3000"])
def test_click_ignores_spaces_around_a_url(state: State, written: str) -> None:
    """A model's argument often carries a trailing space before urlsplit, which
    drops only leading ASCII spaces)."""
    assert click_url(state, written).startswith("Current page: /news (")


def test_back_retraces_several_pages_in_reverse_order(state: State) -> None:
    """History is a stack: back from C goes to B, then to A)."""
    click_url(state, "/staff")
    click_url(state, "/news")
    assert go_to_previous_page(state).startswith("Current page: /staff (")
    assert go_to_previous_page(state).startswith("Current page: / (")
    assert go_to_previous_page(state).startswith("Error: there is no previous page")


@pytest.mark.parametrize("base", ["/products", "/staff"])
def test_paginated_listings_show_every_row_once_with_headers_that_count_from_one(base: str) -> None:
    """Page k of n says 'items a-b of N' with a = 10(k-1)+1; together the pages hold all N rows."""
    site = build_site(0)
    pages = [site[base]] + [site[f"{base}?page={k}"] for k in range(2, 100) if f"{base}?page={k}" in site]
    rows, expected_first = 0, 1
    for page in pages:
        header = page["lines"][0].split(" | ")[0]  # "Page k of n, <label> a-b of N"
        first, last = map(int, header.split(" ")[-3].split("-"))
        total = int(header.split(" ")[-1])
        assert first == expected_first and last - first + 1 == len(page["lines"]) - 2
        rows, expected_first = rows + last - first + 1, last + 1
    assert rows == total


def test_a_world_too_small_to_staff_its_departments_is_refused() -> None:
    """Each department needs a head and members."""
    with pytest.raises(ValueError, match="needs at least"):
        draw_company(0, n_people=20)


def test_the_two_executives_under_the_chief_executive_hold_different_offices() -> None:
    """One CFO and one COO, never two of either."""
    for seed in range(10):
        c = draw_company(seed)
        titles = [c.people[m].title for m in c.departments[EXECUTIVE].members[:2]]
        assert sorted(titles) == ["Chief Financial Officer", "Chief Operating Officer"], seed


LINK = re.compile(r"\[([^\]]+)\]\((/[^)]*)\)")


def _listed(site, urls, prefix):
    """The link texts, in page order, of links to ``prefix``... over the pages ``urls``."""
    return [text for url in urls for line in site[url]["lines"] for text, target in LINK.findall(line)
            if target.startswith(prefix) and target != prefix.rstrip("/")]


def test_listings_are_in_the_order_their_pages_promise() -> None:
    """Catalogue and categories by product name, staff directory and department members by last name,
    news latest first, a manager's products by name."""
    site = build_site(0)
    catalogue = ["/products"] + [f"/products?page={k}" for k in range(2, 20) if f"/products?page={k}" in site]
    names = _listed(site, catalogue, "/products/")
    assert names == sorted(names) and len(names) == 88
    directory = ["/staff"] + [f"/staff?page={k}" for k in range(2, 20) if f"/staff?page={k}" in site]
    people = [name.split(" ", 1)[::-1] for name in _listed(site, directory, "/staff/")]
    assert people == sorted(people)
    for url, page in site.items():
        if url.startswith("/categories/"):
            in_category = _listed(site, [url], "/products/")
            assert in_category == sorted(in_category), url
        if url.startswith("/departments/"):
            members = [n.split(" ", 1)[::-1] for n in _listed(site, [url], "/staff/")[1:]]  # after the head
            assert members == sorted(members), url
        if url.startswith("/staff/") and "## Products managed" in page["lines"]:
            managed = _listed(site, [url], "/products/")
            assert managed == sorted(managed), url
    dates = [line.split(" — ")[0] for line in site["/news"]["lines"] if " — [" in line]
    assert dates == sorted(dates, reverse=True) and len(dates) > 1


def test_nobody_reports_to_themselves_and_only_the_chief_executive_reports_to_no_one() -> None:
    """The reporting chain ends at the CEO."""
    site = build_site(0)
    people = {url: page for url, page in site.items() if url.startswith("/staff/")}
    top = []
    for url, page in people.items():
        managers = [target for line in page["lines"] if line.startswith("Reports to: ")
                    for _, target in LINK.findall(line)]
        assert url not in managers, url
        if not managers:
            top.append(page["lines"][0])
    assert top == ["Title: Chief Executive Officer"]


def test_every_url_is_url_safe() -> None:
    """Slugs are lowercase words joined by hyphens, so that a URL needs no quoting."""
    for seed in range(5):
        for url in build_site(seed):
            assert re.fullmatch(r"/([a-z0-9-]+(/[a-z0-9-]+)*)?(\?page=\d+)?", url), url
