"""Episodes in a Gymnasium vector env: the one loop by which a model, or any player, plays.

:func:`play` plays a list of jobs (each a sub-env's reset options: ``{"task_id": …}``, or ``None``
for a task drawn from the env's pool) in waves of ``num_envs``. Each round, every episode whose
turn it is acts, all of one player's seats in one batched call (:mod:`agents.policy`); then the
vector env steps once, every sub-env on its own action. What the env answers goes back to whoever
speaks next. An episode that ends leaves its player's batch at once; its sub-env is reset with a
reset mask (so that a vector env whose autoreset is disabled may step it again) and sits out the
rest of the wave on the no-op action ``None``, which our envs answer without taking a turn. An
episode that outgrows the model's context ends there (``end_reason="context_limit"``, reward 0).

What the loop reads from an env, besides the Gymnasium API: ``info["policy"]`` and
``info["tools"]`` (the system text and tool schemas the agent is shown), ``info["task_id"]`` and
``info["domain"]``. A two-party env (a conversation with a simulated user,
:class:`envs.user.SimulatedUser`) also says whose turn it is (``info["speaker"]``: ``"agent"`` or
``"user"``), the user's brief (``info["user_prompt"]``) and the message the user answers first
(``info["greeting"]``); the ``user`` player then plays the other side. An observation that goes to
the player who just acted is a tool's output; one that goes to the other player is a message from
that party (role ``user`` in either's chat).

Any vector env of our ids works (:func:`make_vector_env` makes one the usual way), sync or async:
an async one runs env steps and verifiers in its worker processes, and gives the same episodes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from agents.policy import Opening, Player, Policy, Seats, Trajectory, as_player
from envs.cat import CodeAsTask

VECTORIZATION_MODES = ("sync", "async")


def make_vector_env(env_id: str, num_envs: int, mode: str = "sync",
                    wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (), **env_kwargs: Any) -> VectorEnv:
    """``num_envs`` sub-envs of ``env_id`` (``env_kwargs`` to each), vectorized ``sync`` or ``async``
    with autoreset off: :func:`play` resets sub-envs itself, each with its own task."""
    if mode not in VECTORIZATION_MODES:
        raise ValueError(f"vectorization mode must be one of {VECTORIZATION_MODES}, got {mode!r}")
    with _workers_ignore_ctrl_c(mode == "async"):
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode,
                            vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
                            wrappers=list(wrappers) or None, **env_kwargs)


@contextlib.contextmanager
def _workers_ignore_ctrl_c(starting_workers: bool) -> Iterator[None]:
    """SIGINT ignored while worker processes start, so they ignore it for good: a terminal's Ctrl-C
    goes to the whole process group, and a worker it stopped (while making its env, say) left the
    main process a broken pipe instead of its own KeyboardInterrupt, which says how to resume. The
    main process closes its workers when it stops."""
    if not starting_workers or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Game:
    """One episode under way in sub-env ``env``: the agent's seat, and the user's where there is one."""

    env: int
    agent: Trajectory
    opening: Opening
    turn: str = "agent"
    user: Trajectory | None = None
    user_opening: Opening | None = None
    seats: dict[str, int] = field(default_factory=dict)
    """Each player's seat (its index in that player's seats) at this game."""
    acted: str = ""
    done: bool = False


def play(envs: VectorEnv, agent: Player | Policy, jobs: Sequence[dict[str, Any] | None] | int,
         seed: int | None = None, user: Player | Policy | None = None,
         on_end: Callable[[int, Trajectory], None] | None = None) -> list[Trajectory]:
    """One episode per job (reset options, or a count of episodes on tasks drawn from the pool), in
    waves of ``envs.num_envs``; the agent's :class:`Trajectory` of each, in job order.

    ``seed`` seeds sub-env ``i``'s reset of a wave starting at job ``j`` with ``seed + j + i`` and
    each wave's sampling with ``seed + j``. ``user`` plays the other side of two-party envs.
    ``on_end`` is called with each job's index and trajectory as its episode ends (records written as
    they come, a progress bar)."""
    players = {"agent": as_player(agent), "user": as_player(user) if user is not None else None}
    jobs = [None] * jobs if isinstance(jobs, int) else list(jobs)
    played: list[Trajectory] = []
    for start in range(0, len(jobs), envs.num_envs):
        wave_seed = None if seed is None else seed + start
        ended = None if on_end is None else functools.partial(_shifted, on_end, start)
        played += _wave(envs, players, jobs[start:start + envs.num_envs], wave_seed, ended)
    return played


def _shifted(on_end: Callable[[int, Trajectory], None], offset: int, index: int, trajectory: Trajectory) -> None:
    on_end(offset + index, trajectory)


def _mapped(on_end: Callable[[int, Trajectory], None], indices: list[int], index: int, trajectory: Trajectory) -> None:
    on_end(indices[index], trajectory)


def play_tasks(envs: Mapping[str, VectorEnv], agent: Player | Policy, tasks: Sequence[CodeAsTask],
               seed: int | None = None, on_end: Callable[[int, Trajectory], None] | None = None) -> list[Trajectory]:
    """One episode of each task (a task may repeat: several samples), each in the vector env of its
    domain, which must hold it in its pool (reset with ``{"task_id": …}``); trajectories in task order."""
    played: list[Trajectory | None] = [None] * len(tasks)
    by_domain: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_domain.setdefault(task.domain, []).append(i)
    for domain, indices in by_domain.items():
        if domain not in envs:
            raise ValueError(f"no vector env for domain {domain!r} (have {', '.join(envs) or 'none'})")
        ended = None if on_end is None else functools.partial(_mapped, on_end, indices)
        episodes = play(envs[domain], agent, [{"task_id": tasks[i].id} for i in indices], seed, on_end=ended)
        for i, trajectory in zip(indices, episodes, strict=True):
            played[i] = trajectory
    return [t for t in played if t is not None]


def _wave(envs: VectorEnv, players: dict[str, Player | None], wave: list[dict[str, Any] | None],
          seed: int | None, on_end: Callable[[int, Trajectory], None] | None) -> list[Trajectory]:
    games = [_open(i, observation, info) for i, (observation, info) in enumerate(_reset(envs, wave, seed))]
    seats: dict[str, Seats | None] = {"agent": None, "user": None}
    if any(g.user is not None for g in games):
        if players["user"] is None:
            raise ValueError("the env has a user on the other side (its info says the user speaks): pass user=")
        seats["user"] = _take_seats(players["user"], games, "user", seed)

    def finish(game: _Game, reward: float, terminated: bool, truncated: bool, reason: str,
               info: dict[str, Any]) -> None:
        game.agent.reward, game.agent.terminated, game.agent.truncated = reward, terminated, truncated
        game.agent.end_reason, game.agent.final_info, game.done = reason, info, True
        for role, seat in game.seats.items():
            seats[role].end(seat)
        if on_end is not None:
            on_end(game.env, game.agent)

    while live := [g for g in games if not g.done]:
        actions: list[str | None] = [None] * envs.num_envs
        for role in ("user", "agent"):
            due = [g for g in live if g.turn == role and not g.done]
            if not due:
                continue
            if seats[role] is None:
                seats[role] = _take_seats(players[role], live, role, seed)
            for game, action in zip(due, seats[role].act([g.seats[role] for g in due]), strict=True):
                if action is None:
                    finish(game, 0.0, False, True, "context_limit", {})
                else:
                    actions[game.env], game.acted = action, role
        if all(a is None for a in actions):
            continue
        observations, rewards, terminations, truncations, infos = envs.step(tuple(actions))
        ended = []
        for game in (g for g in live if actions[g.env] is not None):
            observation, info = observations[game.env], _unbatch(infos, game.env)
            if "final_info" in info:  # an env that resets in the same step keeps the last step's in these
                observation, info = info.get("final_obs", observation), info["final_info"]
            speaker, following = game.acted, info.get("speaker", "agent")
            role = "tool" if following == speaker else "user"
            if speaker == "agent" and "invalid_action" in info:
                game.agent.invalid_actions += 1
            terminated, truncated = bool(terminations[game.env]), bool(truncations[game.env])
            if terminated or truncated:
                if following == "agent" and seats["agent"] is not None:
                    seats["agent"].observe(game.seats["agent"], observation, role, last=True)
                reason = info.get("end_reason") or ("terminated" if terminated else "truncated")
                finish(game, float(rewards[game.env]), terminated, truncated, reason, info)
                ended.append(game.env)
            elif following == "agent" and seats["agent"] is None:
                game.opening.message = observation  # the user's opening message: the agent's first prompt
            else:
                seats[following].observe(game.seats[following], observation, role)
            game.turn = following
        if ended:
            _park(envs, ended)
    return [g.agent for g in games]


def _open(index: int, observation: str, info: dict[str, Any]) -> _Game:
    """A game from its sub-env's reset: the agent's opening, and the user's in a two-party env."""
    trajectory = Trajectory(task_id=str(info.get("task_id", "")), domain=str(info.get("domain", "")))
    game = _Game(index, trajectory, Opening(trajectory, info.get("policy", ""), list(info.get("tools", [])),
                                            observation), info.get("speaker", "agent"))
    if game.turn == "user":
        game.user = Trajectory(task_id=trajectory.task_id, domain=trajectory.domain)
        game.user_opening = Opening(game.user, info["user_prompt"], [], info["greeting"])
    return game


USER_SEED_SHIFT = 1 << 32
"""Added to a wave's seed for the user's seats, so that a sampling user draws apart from the agent."""


def _take_seats(player: Player, games: list[_Game], role: str, seed: int | None) -> Seats:
    """``player``'s seats at every game still on that needs one, each game noting its row."""
    takers = [g for g in games if not g.done and (role == "agent" or g.user is not None)]
    openings = [g.opening if role == "agent" else g.user_opening for g in takers]
    for row, game in enumerate(takers):
        game.seats[role] = row
    return player.start(openings, seed if seed is None or role == "agent" else seed + USER_SEED_SHIFT)


def _reset(envs: VectorEnv, wave: list[dict[str, Any] | None], seed: int | None) -> list[tuple[str, dict[str, Any]]]:
    """Reset every sub-env, those of the wave's jobs with their options (one reset per distinct
    options, through a reset mask: a vector env gives all sub-envs of one call the same options);
    the first observation and info of each job's sub-env."""
    n = envs.num_envs
    seeds = [None] * n if seed is None else [seed + i for i in range(n)]
    groups: dict[str, list[int]] = {}
    for i in range(n):
        groups.setdefault(json.dumps(wave[i] if i < len(wave) else None, sort_keys=True, default=repr), []).append(i)
    firsts: list[tuple[str, dict[str, Any]]] = [("", {})] * len(wave)
    for indices in groups.values():
        options = dict(wave[indices[0]] or {}) if indices[0] < len(wave) else {}
        if len(groups) > 1:
            mask = np.zeros(n, dtype=np.bool_)
            mask[indices] = True
            options["reset_mask"] = mask
        observations, infos = envs.reset(seed=seeds, options=options or None)
        for i in indices:
            if i < len(wave):
                firsts[i] = (observations[i], _unbatch(infos, i))
    return firsts


def _park(envs: VectorEnv, indices: list[int]) -> None:
    """Reset the sub-envs whose episodes ended, so that the vector env may step them again."""
    mask = np.zeros(envs.num_envs, dtype=np.bool_)
    mask[indices] = True
    envs.reset(options={"reset_mask": mask})


def _unbatch(infos: dict[str, Any], index: int) -> dict[str, Any]:
    """Sub-env ``index``'s own info out of a vector env's (arrays with ``_key`` masks, nested alike)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[index]:
            continue
        if isinstance(value, dict):
            out[key] = _unbatch(value, index)
        else:
            item = value[index]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out
