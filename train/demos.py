"""Demonstrations as trajectories: a task's example solution, or another model's transcript, played
through the real environment and rendered exactly as a rollout renders the policy's own episodes.

Zero-shot, the default model writes no valid tool call; a warm start on the pool's own verified
solutions teaches it the action format before RL needs a reward from it. Likewise it writes no
task in the challenger's format (0 parsed of about 30 proposals): the scripted challengers' tasks,
replayed as the challenger's own episodes (:func:`challenger_actions`), teach it that format. For
that the demonstration must look token for token like the policy's episodes: the same first prompt (system prompt with the
tools, instruction), each action as the assistant turn the policy would have written (the JSON call,
then the end-of-turn token it stops on), and the environment's real observation in between, built
from the same :class:`agents.prompting.ChatFormat` pieces. Loss falls on the assistant tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from agents.policy import Trajectory
from agents.prompting import ChatFormat
from envs.cat import CodeAsTask
from envs.challenger import as_written, render_proposal


def solution_actions(task: CodeAsTask) -> list[str]:
    """The task's example solution as action texts (:func:`envs.challenger.as_written`): each tool
    call, then ``finish`` with the answer."""
    calls = [call.to_json() for call in task.solution.actions]
    calls.append({"name": "finish", "arguments": {"answer": task.solution.answer}})
    return [as_written(call) for call in calls]


def demonstration(env: gym.Env, chat: ChatFormat, actions: Sequence[str], options: dict[str, Any]) -> Trajectory:
    """``actions`` played in ``env`` reset with ``options`` (a task's ``{"task_id": …}``, a challenger's
    world), as a trajectory with loss on the actions' tokens.

    Each action's tokens end with the template's end-of-turn token, as a sampled turn that stops
    there does; the reward is the env's, so a demonstration that does not solve its task shows it
    (reward 0) and callers drop it.
    """
    instruction, info = env.reset(options=options)
    messages = chat.first_messages(info["policy"], info["tools"], instruction)
    trajectory = Trajectory(messages=messages, task_id=info["task_id"], domain=info["domain"])
    trajectory.append(chat.prompt_ids(messages, info["tools"]))
    end_of_turn = list(chat.turn_end_ids[:1])
    for action in actions:
        tokens = chat.tokenizer(action, add_special_tokens=False)["input_ids"] + end_of_turn
        trajectory.turn_starts.append(len(trajectory.token_ids))
        trajectory.append(tokens, [0.0] * len(tokens))
        observation, reward, terminated, truncated, step_info = env.step(action)
        trajectory.messages += [{"role": "assistant", "content": action}, chat.observation_message(observation)]
        trajectory.invalid_actions += "invalid_action" in step_info
        if terminated or truncated:
            trajectory.reward, trajectory.terminated, trajectory.truncated = float(reward), terminated, truncated
            trajectory.final_info = step_info
            break
        trajectory.append(chat.close_turn_ids(tokens) + chat.observation_ids(observation))
    return trajectory


def challenger_actions(task: CodeAsTask) -> list[str]:
    """How a challenger would have written ``task``: its solution's tool calls as the exploration
    (each showing the real output the task's values come from), then the task in the tagged format."""
    return [as_written(call.to_json()) for call in task.solution.actions] + [render_proposal(task)]


def transcript_actions(record: dict[str, Any]) -> list[str]:
    """The actions of a transcript record (``messages`` as :class:`Trajectory` stores them)."""
    return [m["content"] for m in record.get("messages", []) if m.get("role") == "assistant"]
